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


def _two_class_case():
    """One TOF bin, one plane of 1 x 4 bins: f = 0, 0.5, 1, 0.25; truth 10, 20, 30, 40."""
    mask = np.array([[[0.0, 0.5, 1.0, 0.25]]], np.float32)
    truth = np.array([[[[10.0, 20.0, 30.0, 40.0]]]])
    return mask, truth


def test_bin_classes_split_partial_and_dead():
    mask, _ = _two_class_case()
    cls = metrics.bin_classes(mask)
    assert cls["all"].tolist() == [[[False, True, True, True]]]
    assert cls["partial"].tolist() == [[[False, True, False, True]]]
    assert cls["dead"].tolist() == [[[False, False, True, False]]]
    # A bin a rounding error short of 1 counts as dead (DEAD_EPS).
    assert metrics.bin_classes(np.full((1, 1, 1), 1 - 1e-7, np.float32))["dead"].all()


def test_damaged_scores_by_class_hand_computed():
    mask, truth = _two_class_case()
    x = np.array([[[[99.0, 22.0, 27.0, 44.0]]]])  # bin 0 undamaged: ignored
    s = metrics.damaged_scores(x, truth, mask)
    # all: errors 2, -3, 4 on 20, 30, 40 -> sqrt(4 + 9 + 16) / sqrt(400 + 900 + 1600)
    assert s["all"]["nrmse"] == pytest.approx(np.sqrt(29 / 2900))
    assert s["all"]["bias"] == pytest.approx((93 - 90) / 90)
    # partial: bins 1 and 3 -> sqrt(4 + 16) / sqrt(400 + 1600), bias (66 - 60) / 60
    assert s["partial"]["nrmse"] == pytest.approx(np.sqrt(20 / 2000))
    assert s["partial"]["bias"] == pytest.approx(0.1)
    # dead: bin 2 -> 3 / 30 and -0.1
    assert s["dead"]["nrmse"] == pytest.approx(0.1)
    assert s["dead"]["bias"] == pytest.approx(-0.1)
    no_dead = metrics.damaged_scores(x, truth, np.minimum(mask, 0.5))
    assert np.isnan(no_dead["dead"]["nrmse"]) and np.isnan(no_dead["dead"]["bias"])


def test_lost_scores_hand_computed():
    mask, truth = _two_class_case()
    damaged = np.array([[[[9.0, 11.0, 0.0, 29.0]]]])  # surviving counts
    x = np.array([[[[9.0, 21.0, 33.0, 39.0]]]])
    s = metrics.lost_scores(x, damaged, truth, mask)
    # estimated lost 10, 33, 10 against f x truth = 10, 30, 10
    assert s["nrmse"] == pytest.approx(3.0 / np.sqrt(100 + 900 + 100))
    assert s["bias"] == pytest.approx(3.0 / 50.0)
    # 'none' (the damaged counts themselves) estimates nothing lost: bias -1, NRMSE 1.
    s0 = metrics.lost_scores(damaged, damaged, truth, mask)
    assert s0["nrmse"] == pytest.approx(1.0) and s0["bias"] == pytest.approx(-1.0)


def test_data_consistent_fills_only_damaged_bins_and_rounds():
    mask, _ = _two_class_case()
    damaged = np.array([[[[7, 11, 0, 29]]]], np.uint16)
    smooth = np.array([[[[8.4, 20.5, 31.49, -3.0]]]])  # a method that changed every bin
    out = metrics.data_consistent(smooth, damaged, mask)
    assert out.dtype == np.uint16
    # bin 0 (f = 0) stays 7; 20.5 rounds half to even (20); -3 clips to 0
    assert out.tolist() == [[[[7, 20, 31, 0]]]]
    assert np.array_equal(metrics.data_consistent(out, damaged, mask), out)  # idempotent
    big = metrics.data_consistent(np.full(damaged.shape, 1e9), damaged, mask)
    assert big.tolist() == [[[[7, 65535, 65535, 65535]]]]
    nan = metrics.data_consistent(np.full(damaged.shape, np.nan), damaged, mask)
    assert np.array_equal(nan, damaged)  # non-finite output keeps the measured counts
    flt = metrics.data_consistent(smooth, damaged.astype(np.float32), mask)
    assert flt.dtype == np.float32 and flt[0, 0, 0].tolist() == pytest.approx(
        [7.0, 20.5, 31.49, -3.0])


def test_roi_bias_and_volume_scores_hand_computed():
    ref = np.array([[[2.0, 4.0], [6.0, 0.0]]])
    img = np.array([[[3.0, 4.0], [3.0, 100.0]]])
    body = np.array([[[True, True], [True, False]]])
    roi = np.array([[[True, False], [True, False]]])
    assert metrics.roi_bias(img, ref, roi) == pytest.approx((3.0 - 4.0) / 4.0)
    s = metrics.volume_scores(img, ref, body, {"dead": roi, "empty": np.zeros_like(roi)})
    assert s["nrmse"] == pytest.approx(np.sqrt(1 + 0 + 9) / np.sqrt(4 + 16 + 36))
    assert s["bias_dead"] == pytest.approx(-0.25)
    assert np.isnan(s["bias_empty"])
    with pytest.raises(BadInputError):
        metrics.volume_scores(img, ref, body[..., :1])
