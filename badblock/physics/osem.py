"""TOF OSEM on the fast projector, with attenuation, a per-bin sensitivity and a background.

The model of the mean data is ``ybar = s * (A x) + b``: ``A`` is a
:class:`~badblock.physics.fastproj.FastProjector` (TOF, attenuation factors as simulated), ``s``
a multiplicative sensitivity per bin ``[plane, view, bin]`` (the same for every TOF bin; with
``s = 1 - f`` of a dead-block mask the gaps are modelled: a damaged scan is then data of a
scanner that lost those LORs), ``b`` an optional additive background (randoms, scatter; counts
per bin). Ordered subsets are interleaved views (subset ``k`` holds views ``k, k + n, ...``).
One sub-iteration on subset ``S`` is the EM step on the data of ``S`` only::

    x <- x / (A_S^T s_S) * A_S^T (s_S * y_S / (s_S * A_S x + b_S))

which keeps ``x >= 0``. Bins where the model is 0 contribute nothing; voxels no LOR of the
subset sees (zero sensitivity image) keep their value; the start image is 1 inside the
projector's support cylinder and 0 outside. With one subset this is MLEM.

Data are ``[n_tof, plane, view, bin]`` in linear TOF order, the projector's (convert a Siemens
file with :func:`badblock.physics.simulate.linear_index`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from badblock.errors import BadInputError
from badblock.physics.fastproj import FastProjector
from badblock.utils.progress import progress


def subset_views(n_views: int, subsets: int) -> list[list[int]]:
    """Interleaved view subsets: ``[[0, n, 2n, ...], [1, n + 1, ...], ...]``."""
    if not 1 <= subsets <= n_views:
        raise BadInputError("osem.subsets", f"must be between 1 and {n_views}, not {subsets}")
    return [list(range(k, n_views, subsets)) for k in range(subsets)]


def support_image(projector: FastProjector) -> torch.Tensor:
    """1 inside the projector's support cylinder (voxel centres), 0 outside: ``[z, y, x]``."""
    grid = projector.grid
    y, x = np.meshgrid(grid.centres(1), grid.centres(2), indexing="ij")
    inside = np.hypot(y, x) <= projector.support_mm
    img = np.broadcast_to(inside, grid.shape).astype(np.float64)
    return torch.as_tensor(img, dtype=projector.dtype, device=projector.device)


def _bins(arr, shape, what: str, projector: FastProjector) -> torch.Tensor | None:
    if arr is None:
        return None
    t = arr if torch.is_tensor(arr) else torch.as_tensor(np.asarray(arr))
    if tuple(t.shape) not in (tuple(shape), tuple(shape[1:])):
        raise BadInputError(what, f"shape {tuple(t.shape)} is neither {tuple(shape)} nor "
                                  f"{tuple(shape[1:])}")
    t = t.to(device=projector.device, dtype=projector.dtype)
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise BadInputError(what, "must be finite and non-negative")
    return t


def osem(data, projector: FastProjector, *, iterations: int = 3, subsets: int = 5,
         sensitivity=None, background=None, image=None,
         callback: Callable[[int, torch.Tensor], None] | None = None,
         desc: str = "osem", sens_images: dict | None = None) -> np.ndarray:
    """Reconstruct ``data`` ``[n_tof, plane, view, bin]``: float32 image ``[z, y, x]``.

    ``iterations`` full passes of ``subsets`` view subsets; ``sensitivity`` ``[plane, view,
    bin]`` (or 4-D) multiplies the system model (None = 1; ``1 - mask`` models the gaps);
    ``background`` (same shapes) is added to the model; ``image`` is the start image (default
    the support cylinder); ``callback(iteration, image)`` runs after each full iteration (the
    tensor is the live image: copy it to keep it). A progress bar counts sub-iterations.
    ``sens_images``: a dict that keeps the subset sensitivity images ``A_S^T s_S`` (filled on
    first use): pass the same dict to reconstructions with the same projector, sensitivity and
    subsets to compute them once (a sixth to a third of the work of a short reconstruction).
    """
    shape = projector.shape
    y = _bins(data, shape, "osem data", projector)
    if y is None or tuple(y.shape) != tuple(shape):
        raise BadInputError("osem data", f"must be a scan {tuple(shape)} [TOF, plane, view, bin]")
    s = _bins(sensitivity, shape, "osem sensitivity", projector)
    b = _bins(background, shape, "osem background", projector)
    if iterations < 0:
        raise BadInputError("osem.iterations", f"must be >= 0, not {iterations}")
    x = support_image(projector) if image is None else \
        torch.as_tensor(np.asarray(image) if not torch.is_tensor(image) else image).to(
            device=projector.device, dtype=projector.dtype).clone()
    if tuple(x.shape) != tuple(projector.grid.shape) or bool((x < 0).any()):
        raise BadInputError("osem image", f"must be non-negative {projector.grid.shape}")
    groups = subset_views(shape[2], subsets)
    sens_img: dict = sens_images if sens_images is not None else {}
    bar = progress(total=iterations * len(groups), desc=desc, unit="subset")
    try:
        for it in range(iterations):
            for k, views in enumerate(groups):
                sv = None if s is None else s[..., views, :]
                if (subsets, k) not in sens_img:
                    ones = torch.ones((shape[0], shape[1], len(views), shape[3]),
                                      dtype=projector.dtype, device=projector.device)
                    sens_img[subsets, k] = projector.adjoint(ones if sv is None else ones * sv,
                                                             views)
                model = projector.forward(x, views)
                if sv is not None:
                    model *= sv
                if b is not None:
                    model += b[..., views, :]
                ratio = torch.where(model > 0, y[:, :, views] / model.clamp_min(1e-30),
                                    torch.zeros((), dtype=model.dtype, device=model.device))
                if sv is not None:
                    ratio *= sv
                back = projector.adjoint(ratio, views)
                norm = sens_img[subsets, k]
                x = torch.where(norm > 0, x * back / norm.clamp_min(1e-30), x)
                bar.update(1)
            if callback is not None:
                callback(it + 1, x)
    finally:
        bar.close()
    return x.float().cpu().numpy()


def mask_volume(projector: FastProjector | str, mask, views=None) -> np.ndarray:
    """Where the damaged LORs run: float32 ``[z, y, x]`` in 0..1, the share of each voxel's
    sensitivity ``A^T 1`` that passes through damaged bins, weighted by their lost fraction:
    ``A^T f / A^T 1`` (0 where no LOR passes). ``mask`` is ``[plane, view, bin]``; a scanner
    name builds its default projector without attenuation (pure geometry). Thresholding it
    (e.g. > 0.05) gives "the volume the dead block's LORs pass through"."""
    proj = projector if isinstance(projector, FastProjector) else FastProjector(projector)
    shape = proj.shape
    f = _bins(mask, shape, "mask", proj)
    if f is None or tuple(f.shape) != tuple(shape[1:]):
        raise BadInputError("mask", f"must be [plane, view, bin] {tuple(shape[1:])}")
    vlist = list(range(shape[2])) if views is None else list(views)
    ones = torch.ones((shape[0], shape[1], len(vlist), shape[3]), dtype=proj.dtype,
                      device=proj.device)
    hit = proj.adjoint(ones * f[:, vlist], vlist)
    total = proj.adjoint(ones, vlist)
    out = torch.where(total > 0, hit / total.clamp_min(1e-30), torch.zeros_like(total))
    return out.clamp(0.0, 1.0).float().cpu().numpy()
