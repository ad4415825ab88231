"""Scores of a repaired scan against a reference.

Arrays are scans ``[TOF, plane, view, bin]`` or ``[plane, view, bin]``; ``mask`` is the dead-block
mask ``[plane, view, bin]`` (fraction of LORs lost, 0..1). The *damaged bins* are those with
f > 0 (every TOF bin of them); the *affected planes* the (TOF, plane) images holding at least
one damaged bin. The reference is either the noiseless truth (simulated data) or the complete
measured scan; both are scored by :func:`score`.
"""

from __future__ import annotations

import math

import numpy as np

from badblock.errors import BadInputError


def _pair(x: np.ndarray, ref: np.ndarray, mask: np.ndarray):
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if x.shape != ref.shape:
        raise BadInputError("metrics", f"repair shape {x.shape} differs from the reference "
                                       f"{ref.shape}")
    mask = np.asarray(mask)
    if mask.shape != x.shape[-3:]:
        raise BadInputError("mask", f"shape {mask.shape} does not match the scan's "
                                    f"[plane, view, bin] {x.shape[-3:]}")
    return x, ref, np.broadcast_to(mask > 0, x.shape)


def nrmse(x: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """||x - ref|| / ||ref|| over the damaged bins (f > 0); NaN when there are none."""
    x, ref, sel = _pair(x, ref, mask)
    norm = math.sqrt(float(np.sum(ref[sel] ** 2)))
    if not sel.any() or norm == 0:
        return float("nan")
    return math.sqrt(float(np.sum((x[sel] - ref[sel]) ** 2))) / norm


def bias(x: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Relative sum error over the damaged bins: (sum x - sum ref) / sum ref."""
    x, ref, sel = _pair(x, ref, mask)
    total = float(np.sum(ref[sel]))
    if not sel.any() or total == 0:
        return float("nan")
    return (float(np.sum(x[sel])) - total) / total


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
    norm = math.sqrt(float(np.sum(ref[sel] ** 2)))
    err = math.sqrt(float(np.sum((img[sel] - ref[sel]) ** 2)))
    return {"nrmse": err / norm if norm > 0 else float("nan"),
            "psnr": psnr(img[:, None], ref[:, None]),
            "ssim": ssim(img[:, None], ref[:, None])}
