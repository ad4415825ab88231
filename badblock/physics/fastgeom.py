"""Geometry of the fast projector (:mod:`badblock.physics.fastproj`): its rays, tilts, defaults.

numpy only. Rays are the transaxial lines the projector traces per view (every real crystal pair
of every sub-view, or one mean line per bin); tilts are the axial slopes it samples per plane
(every real ring pair, or a few mean slopes per plane).
"""

from __future__ import annotations

import numpy as np

from badblock.physics.geometry import (
    EXACT_MAX_LORS,
    lor_total,
    plane_ring_pairs,
    transaxial_pairs,
)
from badblock.physics.projector import crystal_yx
from badblock.physics.scanners import Scanner

SUBVIEWS = ("all", "mean")
FAST_POOL_MM = 6.5  # pooled sample spacing of the fast default (half the Vision's TOF sigma)
FAST_TILTS = 2  # mean tilts per plane of the fast default


def default_options(scanner: Scanner, step_mm: float | None = None) -> dict:
    """``subviews``, ``tilts`` and ``pool`` of the default setting for ``scanner``: the exact
    geometry for small scanners, mean rays / mean tilts / samples pooled to about
    ``FAST_POOL_MM`` for the clinical ones."""
    if lor_total(scanner) <= EXACT_MAX_LORS:
        return {"subviews": "all", "tilts": "ring", "pool": 1}
    step = step_mm or scanner.bin_size_mm
    return {"subviews": "mean", "tilts": FAST_TILTS, "pool": max(1, round(FAST_POOL_MM / step))}


def _perp(u: np.ndarray) -> np.ndarray:
    """(y, x) vectors rotated by +90 degrees in the x-y plane."""
    return np.stack([u[..., 1], -u[..., 0]], axis=-1)


def ray_geometry(scanner: Scanner, subviews: str) -> dict:
    """Transaxial rays per view: ``mid``, ``u`` float64 ``[V, R, 2]`` (y, x) chord midpoint and
    unit direction det1 -> det2, ``lxy`` ``[R]`` det-to-det length (mm, depends on the bin only),
    ``weight`` ``[V, R]`` real LORs the ray stands for, ``bin`` ``[R]`` its bin. Rays are ordered
    bin-major: ``R = n_bins * mash`` (``"all"``) or ``n_bins`` (``"mean"``)."""
    det1, det2, valid = (a.transpose(0, 2, 1) for a in transaxial_pairs(scanner))  # [V, B, M]
    pos = crystal_yx(scanner.crystals_per_ring, scanner.radius_mm)
    d = pos[det2] - pos[det1]
    lxy = np.sqrt((d * d).sum(-1))
    u = d / lxy[..., None]
    mid = (pos[det1] + pos[det2]) / 2
    s = (mid * _perp(u)).sum(-1)  # signed distance from the axis, the same for every sub-view
    v, b, m = valid.shape
    if subviews == "all":
        return {"mid": mid.reshape(v, b * m, 2), "u": u.reshape(v, b * m, 2),
                "lxy": lxy[0].reshape(b * m), "weight": valid.reshape(v, b * m).astype(float),
                "bin": np.repeat(np.arange(b), m)}
    w = valid.sum(-1).astype(float)  # [V, B]
    use = np.where(w[..., None] > 0, valid, True)  # a bin without real LORs: any line, weight 0
    us = (u * use[..., None]).sum(-2)
    um = us / np.sqrt((us * us).sum(-1))[..., None]
    sm = (s * use).sum(-1) / use.sum(-1)
    return {"mid": sm[..., None] * _perp(um), "u": um, "lxy": lxy[0, :, 0], "weight": w,
            "bin": np.arange(b)}


def tilt_groups(scanner: Scanner, per_plane: int = 0) -> dict:
    """Axial tilts, float64/int ``[G]``: ``sum`` (r1 + r2, the midpoint slice), ``d`` (r2 - r1,
    a mean over the group), ``count`` (real ring pairs) and ``plane`` (where it is summed).

    ``per_plane = 0``: every real ring pair is its own tilt. Otherwise each plane's ring pairs,
    sorted by ``d``, are cut into at most ``per_plane`` runs of nearly equal size, each standing
    for its pairs with their mean ``d`` (1 = one mean tilt per plane).
    """
    pairs = plane_ring_pairs(scanner)
    out: dict[str, list] = {"sum": [], "d": [], "count": [], "plane": []}
    for p, pp in enumerate(pairs):
        if len(pp) == 0:
            continue
        d = np.sort(pp[:, 1] - pp[:, 0])
        runs = [d[i:i + 1] for i in range(len(d))] if per_plane == 0 else \
            [r for r in np.array_split(d, min(per_plane, len(d)))]
        for r in runs:
            out["sum"].append(float(pp[0].sum()))
            out["d"].append(float(r.mean()))
            out["count"].append(float(len(r)))
            out["plane"].append(p)
    return {k: np.asarray(v, dtype=np.int64 if k == "plane" else float) for k, v in out.items()}



