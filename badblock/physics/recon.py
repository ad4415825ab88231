"""Filtered back-projection of direct sinogram planes, to score repairs in the image domain.

Only what evaluation needs: 2-D FBP (ramp filter, ``skimage.transform.iradon``) of each direct
plane (segment 0) summed over TOF bins (the sum over TOF is the non-TOF sinogram). Views are
taken as evenly spaced over 180 degrees, view v at angle 180 v / V, and radial bins as evenly
spaced (no arc correction): for comparing repairs against each other on the same geometry that is
enough; it is not a quantitative reconstruction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from badblock.errors import BadInputError
from badblock.io.segments import Segment


def view_angles(n_views: int) -> np.ndarray:
    """Angles of the views in degrees, evenly over [0, 180): float ``[n_views]``."""
    return np.arange(n_views, dtype=np.float64) * (180.0 / n_views)


def fbp(sinogram: np.ndarray, *, filter_name: str = "ramp") -> np.ndarray:
    """FBP of one plane ``[view, bin]`` -> image ``[bin, bin]`` (pixel = bin width, float32).

    Outside the inscribed circle of the image the result is 0 (skimage's ``circle=True``).
    """
    from skimage.transform import iradon

    sino = np.asarray(sinogram, dtype=np.float64)
    if sino.ndim != 2:
        raise BadInputError("fbp", f"needs one plane [view, bin], got shape {sino.shape}")
    n_views, n_bins = sino.shape
    img = iradon(sino.T, theta=view_angles(n_views), output_size=n_bins,
                 filter_name=filter_name, circle=True)
    return img.astype(np.float32)


def direct_planes(scan: np.ndarray, segments: Sequence[Segment] | None = None) -> np.ndarray:
    """The direct planes (segment 0, stored first) of a scan, summed over TOF: ``[n0, view, bin]``.

    ``scan`` is ``[TOF, plane, view, bin]`` or ``[plane, view, bin]``; without ``segments`` every
    plane counts as direct.
    """
    scan = np.asarray(scan)
    if scan.ndim == 4:
        scan = scan.sum(axis=0, dtype=np.float64)
    if scan.ndim != 3:
        raise BadInputError("fbp", f"needs a scan [TOF, plane, view, bin], got shape {scan.shape}")
    n0 = scan.shape[0] if segments is None else segments[0].n_planes
    return np.asarray(scan[:n0], dtype=np.float32)


def reconstruct_direct(scan: np.ndarray, segments: Sequence[Segment] | None = None,
                       planes: Sequence[int] | None = None) -> np.ndarray:
    """FBP images of direct planes: ``[n, bin, bin]`` float32 (all direct planes, or ``planes``)."""
    sino = direct_planes(scan, segments)
    idx = range(sino.shape[0]) if planes is None else planes
    n_bins = sino.shape[-1]
    return np.stack([fbp(sino[p]) for p in idx]) if len(idx) else np.zeros((0, n_bins, n_bins),
                                                                          np.float32)


def fov_support(n_bins: int) -> np.ndarray:
    """The reconstruction circle of an ``[n_bins, n_bins]`` image: bool ``[n_bins, n_bins]``."""
    c = (n_bins - 1) / 2.0
    y, x = np.ogrid[:n_bins, :n_bins]
    return (x - c) ** 2 + (y - c) ** 2 <= (n_bins / 2.0) ** 2
