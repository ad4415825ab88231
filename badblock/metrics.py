"""Scores of a repaired scan against a reference, and the rule that puts every method on the
same bins.

Arrays are scans ``[TOF, plane, view, bin]`` or ``[plane, view, bin]``; ``mask`` is the dead-block
mask ``[plane, view, bin]`` (fraction f of LORs lost, 0..1). The *damaged bins* are those with
f > 0 (every TOF bin of them): *partly damaged* when 0 < f < 1, *fully dead* when
f >= 1 - ``DEAD_EPS`` (:func:`bin_classes`); the *affected planes* the (TOF, plane) images
holding at least one damaged bin. The reference is either the noiseless truth (simulated data)
or the complete measured scan; both are scored by :func:`score`.

Comparing methods fairly: :func:`data_consistent` turns any method's output into what a repair
may deliver (only damaged bins filled, every other bin as measured, rounded to the scan's
dtype), so that whole-plane and image-domain scores measure the fill and nothing else; the
lost-count error (:func:`lost_scores`) scores the part only a repair does: the counts the dead
block removed, ``repaired - surviving`` against ``f x truth`` (their expectation under
binomial thinning of Poisson counts).
"""

from __future__ import annotations

import math

import numpy as np

from badblock.errors import BadInputError

# A bin whose lost fraction is within this of 1 is fully dead (rounding in a stored mask).
DEAD_EPS = 1e-6

BIN_CLASSES = ("all", "partial", "dead")


def _pair(x: np.ndarray, ref: np.ndarray, region: np.ndarray):
    """``x``, ``ref`` as float64 and ``region`` (bool ``[plane, view, bin]``) broadcast to them."""
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if x.shape != ref.shape:
        raise BadInputError("metrics", f"repair shape {x.shape} differs from the reference "
                                       f"{ref.shape}")
    region = np.asarray(region)
    if region.shape != x.shape[-3:]:
        raise BadInputError("mask", f"shape {region.shape} does not match the scan's "
                                    f"[plane, view, bin] {x.shape[-3:]}")
    return x, ref, np.broadcast_to(region.astype(bool), x.shape)


def _nrmse_where(x: np.ndarray, ref: np.ndarray, sel: np.ndarray) -> float:
    """||x - ref|| / ||ref|| over the entries where ``sel`` (same shape) holds; NaN when there
    are none or the reference is 0 there."""
    norm = math.sqrt(float(np.sum(ref[sel] ** 2)))
    if not sel.any() or norm == 0:
        return float("nan")
    return math.sqrt(float(np.sum((x[sel] - ref[sel]) ** 2))) / norm


def _volumes(img: np.ndarray, ref: np.ndarray, region: np.ndarray, what: str):
    """``img``, ``ref`` as float64 and ``region`` as bool, checked to share one shape."""
    img = np.asarray(img, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    region = np.asarray(region, dtype=bool)
    if img.shape != ref.shape or region.shape != img.shape:
        raise BadInputError("metrics", f"image {img.shape}, reference {ref.shape} and {what} "
                                       f"{region.shape} must have one shape")
    return img, ref, region


def bin_classes(mask: np.ndarray) -> dict[str, np.ndarray]:
    """The damaged bins by class: bool ``[plane, view, bin]`` each, keyed by
    :data:`BIN_CLASSES`: ``all`` (f > 0), ``partial`` (0 < f < 1 - DEAD_EPS), ``dead``."""
    f = np.asarray(mask, dtype=np.float32)
    dead = f >= 1.0 - DEAD_EPS
    return {"all": f > 0, "partial": (f > 0) & ~dead, "dead": dead}


def nrmse_over(x: np.ndarray, ref: np.ndarray, region: np.ndarray) -> float:
    """||x - ref|| / ||ref|| over ``region`` (bool ``[plane, view, bin]``, every TOF bin of it);
    NaN when the region is empty or the reference 0 there."""
    return _nrmse_where(*_pair(x, ref, region))


def bias_over(x: np.ndarray, ref: np.ndarray, region: np.ndarray) -> float:
    """Relative sum error over ``region``: (sum x - sum ref) / sum ref (NaN if that sum is 0)."""
    x, ref, sel = _pair(x, ref, region)
    total = float(np.sum(ref[sel]))
    if not sel.any() or total == 0:
        return float("nan")
    return (float(np.sum(x[sel])) - total) / total


def nrmse(x: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """||x - ref|| / ||ref|| over the damaged bins (f > 0); NaN when there are none."""
    return nrmse_over(x, ref, np.asarray(mask) > 0)


def bias(x: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Relative sum error over the damaged bins: (sum x - sum ref) / sum ref."""
    return bias_over(x, ref, np.asarray(mask) > 0)


def damaged_scores(x: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict[str, dict]:
    """NRMSE and bias of ``x`` against ``ref`` in each bin class of :func:`bin_classes`:
    ``{"all": {"nrmse", "bias"}, "partial": {...}, "dead": {...}}`` (NaN for an empty class)."""
    return {name: {"nrmse": nrmse_over(x, ref, sel), "bias": bias_over(x, ref, sel)}
            for name, sel in bin_classes(mask).items()}


def lost_scores(x: np.ndarray, damaged: np.ndarray, truth: np.ndarray, mask: np.ndarray
                ) -> dict[str, float]:
    """The lost-count error: NRMSE and bias of ``x - damaged`` (a method's estimate of the counts
    the dead block removed) against ``f x truth`` (what it removed, in expectation), over the
    damaged bins (f > 0). ``damaged`` holds the surviving counts the method was given."""
    f = np.asarray(mask, dtype=np.float64)
    est = np.asarray(x, dtype=np.float64) - np.asarray(damaged, dtype=np.float64)
    lost = f * np.asarray(truth, dtype=np.float64)
    region = f > 0
    return {"nrmse": nrmse_over(est, lost, region), "bias": bias_over(est, lost, region)}


def data_consistent(x: np.ndarray, damaged: np.ndarray, mask: np.ndarray,
                    dtype: np.dtype | str | None = None) -> np.ndarray:
    """What a repair may deliver from a method's output ``x``: the damaged bins (f > 0) take
    ``x``, every other bin keeps the measured ``damaged`` counts, and the result is stored in
    ``dtype`` (default ``damaged``'s): for an integer dtype rounded to the nearest integer and
    clipped to its range. Non-finite values of ``x`` keep the measured counts. Applying it twice
    changes nothing, so a network's repair written by ``badblock repair`` passes unchanged.
    """
    damaged = np.asarray(damaged)
    x = np.asarray(x, dtype=np.float64)
    if x.shape != damaged.shape:
        raise BadInputError("metrics", f"output shape {x.shape} differs from the damaged scan "
                                       f"{damaged.shape}")
    dtype = np.dtype(dtype if dtype is not None else damaged.dtype)
    region = np.broadcast_to(np.asarray(mask) > 0, x.shape)
    value = np.where(np.isfinite(x), x, damaged)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        value = np.clip(np.rint(value), info.min, info.max)
    return np.where(region, value, damaged).astype(dtype)


def affected_planes(mask: np.ndarray) -> np.ndarray:
    """Indices of the planes that hold a damaged bin: int ``[n]``."""
    return np.flatnonzero((np.asarray(mask) > 0).any(axis=(-2, -1)))


def _planes(x: np.ndarray, planes: np.ndarray | None) -> np.ndarray:
    """(TOF, plane) images ``[n, view, bin]`` of the selected planes."""
    x4 = x.reshape((-1,) + x.shape[-3:])
    if planes is not None:
        x4 = x4[:, planes]
    return x4.reshape((-1,) + x.shape[-2:])


def _win(shape: tuple[int, ...]) -> int:
    side = min(shape)
    win = min(7, side if side % 2 else side - 1)
    return max(win, 3)


def psnr(x: np.ndarray, ref: np.ndarray, planes: np.ndarray | None = None) -> float:
    """Mean over (TOF, plane) images of the PSNR in dB, data range from the reference image.

    Images whose reference is flat (no range) are skipped; a perfect image counts as 100 dB
    so that one exact plane cannot make the mean infinite.
    """
    from skimage.metrics import peak_signal_noise_ratio

    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    vals = []
    for a, r in zip(_planes(x, planes), _planes(ref, planes)):
        rng = float(r.max() - r.min())
        if rng <= 0:
            continue
        if np.array_equal(a, r):
            vals.append(100.0)
            continue
        vals.append(min(100.0, float(peak_signal_noise_ratio(r, a, data_range=rng))))
    return float(np.mean(vals)) if vals else float("nan")


def ssim(x: np.ndarray, ref: np.ndarray, planes: np.ndarray | None = None) -> float:
    """Mean over (TOF, plane) images of skimage's SSIM, data range from the reference image."""
    from skimage.metrics import structural_similarity

    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    vals = []
    for a, r in zip(_planes(x, planes), _planes(ref, planes)):
        rng = float(r.max() - r.min())
        if rng <= 0 or min(r.shape) < 3:
            continue
        vals.append(float(structural_similarity(r, a, data_range=rng, win_size=_win(r.shape))))
    return float(np.mean(vals)) if vals else float("nan")


def score(x: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """All sinogram scores of ``x`` against ``ref``: damaged-bin NRMSE and bias, and PSNR and
    SSIM over the affected planes (whole planes, so a method that changes undamaged bins pays)."""
    planes = affected_planes(mask)
    return {"nrmse": nrmse(x, ref, mask), "bias": bias(x, ref, mask),
            "psnr": psnr(x, ref, planes), "ssim": ssim(x, ref, planes)}


def image_scores(img: np.ndarray, ref: np.ndarray, support: np.ndarray | None = None
                 ) -> dict[str, float]:
    """Scores of reconstructed images ``[n, H, W]`` against reference images.

    NRMSE = ||img - ref|| / ||ref|| over ``support`` (bool ``[H, W]``, e.g. the reconstruction
    circle; everything when None); PSNR and SSIM per image, averaged.
    """
    img = np.asarray(img, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if img.shape != ref.shape:
        raise BadInputError("metrics", f"image shape {img.shape} differs from the reference "
                                       f"{ref.shape}")
    sel = np.ones(img.shape, bool) if support is None else np.broadcast_to(support, img.shape)
    return {"nrmse": _nrmse_where(img, ref, sel),
            "psnr": psnr(img[:, None], ref[:, None]),
            "ssim": ssim(img[:, None], ref[:, None])}


def roi_bias(img: np.ndarray, ref: np.ndarray, roi: np.ndarray) -> float:
    """Relative bias of the ROI mean: (mean img - mean ref) / mean ref over the voxels where
    ``roi`` (bool, the images' shape) holds; NaN for an empty ROI or a zero reference mean."""
    img, ref, roi = _volumes(img, ref, roi, "ROI")
    if not roi.any():
        return float("nan")
    mean_ref = float(ref[roi].mean())
    return (float(img[roi].mean()) - mean_ref) / mean_ref if mean_ref != 0 else float("nan")


def volume_scores(img: np.ndarray, ref: np.ndarray, body: np.ndarray,
                  rois: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Scores of a reconstructed volume against the true activity (same shape and units):
    ``nrmse`` = ||img - ref|| / ||ref|| over the ``body`` voxels (bool) and ``bias_<name>``
    = :func:`roi_bias` in each of ``rois``."""
    img, ref, body = _volumes(img, ref, body, "body")
    out = {"nrmse": _nrmse_where(img, ref, body)}
    for name, roi in (rois or {}).items():
        out[f"bias_{name}"] = roi_bias(img, ref, roi)
    return out


def nrmse_estimate(err: float, noise: float, ref2: float) -> float:
    """sqrt((err - noise) / (ref2 - noise)): the NRMSE against the truth estimated from
    held-out counts without the truth (0 when the noise term exceeds the error). ``err``:
    sum (x - r)^2, ``noise``: sum r / f, ``ref2``: sum r^2 over the damaged bins, with
    ``r = (m - y) / f`` the lost counts of a binomial thinning scaled to a whole bin
    (:mod:`badblock.train.validate`, :mod:`badblock.inference.selfcheck`)."""
    return math.sqrt(max(err - noise, 0.0) / max(ref2 - noise, 1e-30))
