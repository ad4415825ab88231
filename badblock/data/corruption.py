"""Count-level corruption: binomial thinning, the model of a dead block and of a lower dose.

A bin whose share ``f`` of lines of response is dead keeps each of its counts independently with
probability ``1 - f``: the damaged count is ``Binomial(n, 1 - f)`` (SPEC section 4).
"""

from __future__ import annotations

import torch

from badblock.errors import BadInputError


def thin(counts: torch.Tensor, survive: torch.Tensor | float,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Binomial thinning: every count survives independently with probability ``survive``.

    ``counts``: tensor of non-negative integer counts (any shape, integer or float dtype holding
    integers), e.g. ``[N, C, view, bin]``. ``survive``: probability in [0, 1] (``1 - mask``
    fraction), a float or a tensor broadcastable to ``counts``. Runs on ``counts``' device with
    ``torch.binomial`` (exact; ``generator`` must live on that device). Returns a tensor of
    ``counts``' shape, dtype and device; ``survive == 1`` keeps every count, ``0`` none.
    """
    if not torch.is_tensor(counts):
        raise BadInputError("counts", f"expected a torch tensor, got {type(counts).__name__}")
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
