"""Normalised convolution of damaged sinograms: the one gap-filling estimate that the classical
baseline (:func:`badblock.baselines.normconv`) and the network's prior channel both use.

For the centre plane ``c`` of a context stack (planes ``j`` of one TOF bin around ``c``,
clamped inside the segment; views extended past the 180 degree seam with the flipped wrap,
:mod:`badblock.physics.stack`) with surviving counts ``y_j``, surviving fraction ``k_j = 1 - f_j``
and per-bin sensitivity ``s_j`` (real LORs per bin), the expected counts per unit of
sensitivity are

    rho = G * (sum_j w_j y_j) / G * (sum_j w_j k_j s_j)

with plane weights ``w_j = exp(-(j - c)^2 / (2 sigma_p^2))`` (``|j - c| <= plane_radius``) and
``G`` a separable Gaussian of sigmas ``sigma_v`` views and ``sigma_b`` bins (kernels cut at
``TRUNCATE`` sigmas, bins reflected at the sinogram edge). The estimate of the complete
centre plane is ``rho * s_c``: under binomial thinning ``E y = k lam``, so ``rho`` is a
weighted average of ``lam / s`` over the neighbourhood, counted only where something survived.

No holes: where less than ``MIN_SUPPORT`` of the kernel's weight falls on measured bins (a dead
region wider than the kernel), the widths in views and bins are doubled (up to
``max(SCALES)`` times) and, if still nothing is measured nearby, the stack's own mean rate is
used. The stack must therefore carry :func:`view_margin` extra views on each side of the views
asked for; the result is cropped to those views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from badblock.errors import BadInputError

TRUNCATE = 3.0  # kernel radius in sigmas
SCALES = (1, 2, 4)  # widths tried in turn where the measured support is too small
MIN_SUPPORT = 0.1  # share of the kernel weight that must fall on measured bins


def check_widths(widths: Sequence[float], where: str = "widths") -> tuple[float, float, float]:
    """``widths`` as three non-negative floats (planes, views, bins), else BadInputError."""
    w = tuple(float(v) for v in widths)
    if len(w) != 3 or not all(math.isfinite(v) and v >= 0 for v in w):
        raise BadInputError(where, f"need three non-negative sigmas (planes, views, bins), got "
                                   f"{list(widths)}")
    return w  # type: ignore[return-value]


def plane_radius(widths: Sequence[float], context: int | None = None) -> int:
    """Planes used on each side: ``ceil(TRUNCATE * sigma_p)``, at most ``context``."""
    r = int(math.ceil(TRUNCATE * float(widths[0]) - 1e-9)) if float(widths[0]) > 0 else 0
    return r if context is None else min(r, int(context))


def view_margin(widths: Sequence[float]) -> int:
    """Extra views a stack needs on each side for :func:`normconv_stack` (largest scale)."""
    s = float(widths[1]) * max(SCALES)
    return int(math.ceil(TRUNCATE * s - 1e-9)) if s > 0 else 0


def _gauss(sigma: float, dtype, device) -> torch.Tensor | None:
    if sigma <= 0:
        return None
    r = max(1, int(math.ceil(TRUNCATE * sigma - 1e-9)))
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def _smooth(x: torch.Tensor, sv: float, sb: float) -> torch.Tensor:
    """Separable Gaussian of ``[N, V, B]``: views zero-padded (the stack's margin
    holds the real continuation), bins reflected at the edge (``d c b a | a b c d``)."""
    n, v, b = x.shape
    y = x.reshape(n, 1, v, b)
    g = _gauss(sv, y.dtype, y.device)
    if g is not None:
        y = F.conv2d(y, g.view(1, 1, -1, 1), padding=(g.numel() // 2, 0))
    g = _gauss(sb, y.dtype, y.device)
    if g is not None:
        r = g.numel() // 2
        idx = torch.arange(-r, b + r, device=y.device)
        idx = torch.where(idx < 0, -idx - 1, torch.where(idx >= b, 2 * b - 1 - idx, idx))
        # reflect more than once for kernels wider than the plane
        idx = torch.remainder(idx, 2 * b)
        idx = torch.where(idx >= b, 2 * b - 1 - idx, idx)
        y = F.conv2d(y[..., idx], g.view(1, 1, 1, -1))
    return y.reshape(n, v, b)


def normconv_stack(counts: torch.Tensor, keep: torch.Tensor, sens: torch.Tensor,
                   widths: Sequence[float], *, margin: int, radius: int | None = None
                   ) -> torch.Tensor:
    """The normalised-convolution rate of the centre plane of each stack (module docstring).

    ``counts``, ``keep``, ``sens``: ``[N, C, V + 2 margin, B]`` (C = 2k+1 planes, centre
    ``k``): surviving counts, surviving fraction 1 - f (0..1) and sensitivity (real LORs per
    bin) of every plane; ``widths`` (sigma planes, views, bins); ``radius``: planes used on
    each side of the centre (default :func:`plane_radius`, at most k); ``margin``: the extra
    views on each side (at least :func:`view_margin`). Returns float32 ``[N, V, B]``: the
    expected counts per unit of sensitivity; multiply by the centre plane's ``sens`` for
    counts. Computed in float32.
    """
    sp, sv, sb = check_widths(widths)
    n, c, vw, nb = counts.shape
    k = c // 2
    if margin < view_margin(widths) or vw <= 2 * margin:
        raise BadInputError("normconv", f"stacks of {vw} views with a margin of {margin} cannot "
                                        f"hold the view kernel (needs {view_margin(widths)})")
    r = plane_radius(widths, k) if radius is None else min(int(radius), k)
    off = torch.arange(c, dtype=torch.float64, device=counts.device) - k
    w = torch.exp(-0.5 * (off / sp) ** 2) if sp > 0 else (off == 0).to(torch.float64)
    w = torch.where(off.abs() <= r, w, torch.zeros_like(w)).view(1, c, 1, 1)
    w = w.float()
    y = counts.float()
    s = sens.float()
    num0 = (w * y).sum(dim=1)
    den0 = (w * keep.float().clamp(0.0, 1.0) * s).sum(dim=1)
    full0 = (w * s).sum(dim=1)
    rate = torch.full_like(num0, float("nan"))
    for scale in SCALES:
        if not torch.isnan(rate[:, margin:vw - margin]).any():
            break
        num = _smooth(num0, sv * scale, sb * scale)
        den = _smooth(den0, sv * scale, sb * scale)
        full = _smooth(full0, sv * scale, sb * scale)
        ok = torch.isnan(rate) & (den > MIN_SUPPORT * full) & (den > 0)
        rate = torch.where(ok, num / torch.where(den > 0, den, torch.ones_like(den)), rate)
    # nothing measured within the widest kernel: the stack's own mean rate
    tot_num = num0.sum(dim=(1, 2), keepdim=True, dtype=torch.float64)
    tot_den = den0.sum(dim=(1, 2), keepdim=True, dtype=torch.float64)
    mean = torch.where(tot_den > 0, tot_num / torch.where(tot_den > 0, tot_den, 1.0),
                       torch.zeros_like(tot_den))
    rate = torch.where(torch.isnan(rate), mean.float().expand_as(rate), rate)
    return rate[:, margin:vw - margin].to(torch.float32)


__all__ = ["normconv_stack", "view_margin", "plane_radius", "check_widths", "TRUNCATE",
           "SCALES", "MIN_SUPPORT"]
