"""Metrics on arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from badblock import metrics
from badblock.errors import BadInputError


def test_nrmse_and_bias_only_see_damaged_bins():
    ref = np.full((2, 3, 4, 5), 10.0)
    x = ref.copy()
    mask = np.zeros((3, 4, 5), np.float32)
    mask[1, 2, 1:3] = 0.5  # 2 bins x 2 TOF = 4 damaged values
    x[:, 1, 2, 1:3] = 12.0
    x[:, 0, 0, 0] = 1000.0  # undamaged: ignored
    assert metrics.nrmse(x, ref, mask) == pytest.approx(0.2)
    assert metrics.bias(x, ref, mask) == pytest.approx(0.2)
    x[:, 1, 2, 1] = 8.0
    assert metrics.bias(x, ref, mask) == pytest.approx(0.0)
    assert np.isnan(metrics.nrmse(x, ref, np.zeros_like(mask)))


def test_psnr_ssim_whole_planes():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 10, size=(4, 16, 16))
    assert metrics.ssim(ref, ref) == pytest.approx(1.0)
    assert metrics.psnr(ref, ref) == 100.0
    noisy = ref + rng.normal(0, 1, size=ref.shape)
    rng_ = ref.max(axis=(1, 2)) - ref.min(axis=(1, 2))
    mse = ((noisy - ref) ** 2).mean(axis=(1, 2))
    assert metrics.psnr(noisy, ref) == pytest.approx(np.mean(10 * np.log10(rng_ ** 2 / mse)))
    assert metrics.ssim(noisy, ref) < 0.95
    mask = np.zeros(ref.shape, np.float32)
    mask[2, 3, 3] = 0.1
    s = metrics.score(noisy, ref, mask)
    assert s["psnr"] == pytest.approx(metrics.psnr(noisy[2:3], ref[2:3]))
    assert set(s) == {"nrmse", "bias", "psnr", "ssim"}


def test_image_scores_and_errors():
    ref = np.ones((2, 8, 8))
    img = ref * 1.1
    assert metrics.image_scores(img, ref)["nrmse"] == pytest.approx(0.1)
    with pytest.raises(BadInputError):
        metrics.nrmse(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)), np.zeros((2, 3, 4)))
