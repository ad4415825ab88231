"""FBP of direct planes recovers a known image."""

from __future__ import annotations

import numpy as np
from skimage.transform import radon

from badblock.io.segments import Segment
from badblock.metrics import image_scores
from badblock.physics.recon import direct_planes, fbp, fov_support, reconstruct_direct, view_angles


def _disk(n=48):
    y, x = np.mgrid[:n, :n]
    img = ((x - 20) ** 2 + (y - 26) ** 2 < 64).astype(float) * 3.0
    img += ((x - 28) ** 2 + (y - 20) ** 2 < 25) * 1.0
    return img


def test_fbp_inverts_radon_with_preset_angles():
    img = _disk()
    n_views = 96
    sino = radon(img, theta=view_angles(n_views), circle=True).T  # [view, bin]
    rec = fbp(sino)
    assert rec.shape == img.shape
    support = fov_support(img.shape[0])
    assert image_scores(rec[None], img[None], support)["nrmse"] < 0.25
    # a wrong angle convention (views over 360 degrees) reconstructs much worse
    bad = radon(img, theta=2 * view_angles(n_views), circle=True).T
    assert image_scores(fbp(bad)[None], img[None], support)["nrmse"] > 0.4


def test_direct_planes_sum_tof_and_keep_segment_zero():
    segments = [Segment(0, -1, 1, 3), Segment(-1, -3, -2, 2), Segment(1, 2, 3, 2)]
    scan = np.ones((4, 7, 6, 10), np.uint16)
    d = direct_planes(scan, segments)
    assert d.shape == (3, 6, 10) and np.all(d == 4)
    assert reconstruct_direct(scan, segments, planes=[1]).shape == (1, 10, 10)
