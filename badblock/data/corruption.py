"""Count-level corruption: binomial thinning, the model of a dead block and of a lower dose.

A bin whose share ``f`` of lines of response is dead keeps each of its counts independently with
probability ``1 - f``: the damaged count is ``Binomial(n, 1 - f)``. :func:`thin` is the one
implementation of that rule, for torch tensors on any device (training batches) and for numpy
arrays (evaluation's damaged scans, per-sample thinning in the DataLoader); each draws from its
own kind of generator, so every caller's random stream is its own and reproducible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from badblock.errors import BadInputError
from badblock.physics.mask import thin_counts

if TYPE_CHECKING:  # torch is imported only for tensors: evaluation works without it
    import torch


def thin(counts, survive, generator=None):
    """Binomial thinning: every count survives independently with probability ``survive``.

    ``counts``: non-negative integer counts (any shape, integer or float dtype holding
    integers), e.g. ``[N, C, view, bin]``, as a torch tensor or a numpy array. ``survive``:
    probability in [0, 1] (``1 - f``, f the lost fraction), a float or an array broadcastable to
    ``counts``. Returns the thinned counts in ``counts``' shape and dtype; ``survive == 1``
    keeps every count, ``0`` none.

    Tensors: ``torch.binomial`` on ``counts``' device (exact); ``generator`` a
    ``torch.Generator`` on that device, or None for torch's default. numpy arrays:
    ``generator.binomial`` with ``generator`` a ``numpy.random.Generator`` (required: the
    caller owns its stream); float counts are rounded to whole counts first, negative counts
    are an error.
    """
    if isinstance(counts, np.ndarray):
        return thin_counts(counts, survive, generator)
    import torch

    if not torch.is_tensor(counts):
        raise BadInputError("counts", f"expected a torch tensor or a numpy array, got "
                                      f"{type(counts).__name__}")
    return _thin_torch(counts, survive, generator)


def _thin_torch(counts: torch.Tensor, survive, generator) -> torch.Tensor:
    import torch

    if generator is not None and generator.device.type != counts.device.type:
        raise BadInputError("generator", f"lives on {generator.device}, the counts on "
                            f"{counts.device}: thinning needs a generator on the counts' device")
    work = counts.dtype if counts.dtype in (torch.float32, torch.float64) else torch.float32
    n = counts.to(work)
    if torch.is_tensor(survive):
        p = survive.to(device=counts.device, dtype=work)
    else:
        if not 0.0 <= float(survive) <= 1.0:
            raise BadInputError("survive", f"must be a probability in [0, 1], got {survive}")
        p = torch.full((), float(survive), device=counts.device, dtype=work)
    try:
        p = p.expand_as(n)
    except RuntimeError as exc:
        raise BadInputError("survive", f"shape {list(p.shape)} does not broadcast to the counts' "
                            f"shape {list(n.shape)}") from exc
    # torch.binomial wants contiguous same-shape operands; clamp guards rounding just past 0/1
    out = torch.binomial(n.contiguous(), p.clamp(0.0, 1.0).contiguous(), generator=generator)
    return out.to(counts.dtype)


__all__ = ["thin"]
