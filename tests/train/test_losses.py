"""Loss terms: zero on identical inputs, positive otherwise, MS-SSIM on the real plane shapes."""

from __future__ import annotations

import pytest
import torch
from pytorch_msssim import ms_ssim

from badblock.config import load_config
from badblock.errors import BadInputError
from badblock.train.losses import (
    TERMS,
    Loss,
    build_loss,
    msssim_index,
    msssim_levels,
    poisson_deviance,
)

torch.set_num_threads(1)


def planes(shape=(2, 1, 40, 64), seed=0):
    g = torch.Generator().manual_seed(seed)
    truth = torch.rand(shape, generator=g) * 20 + 1
    noisy = torch.poisson(truth, generator=g)
    return truth / truth.amax(), noisy / truth.amax()


@pytest.mark.parametrize("term", TERMS)
def test_each_term_zero_on_identical_positive_otherwise(term):
    truth, noisy = planes()
    loss = Loss({term: 1.0})
    assert loss(truth, truth.clone()).item() == pytest.approx(0.0, abs=1e-5)
    assert loss(noisy, truth).item() > 1e-3


@pytest.mark.parametrize("shape", [(2, 1, 64, 520), (2, 1, 40, 64)])
def test_msssim_on_real_plane_shapes(shape):
    truth, noisy = planes(shape)
    loss = Loss({"l1": 1.0, "msssim": 1.0})
    pred = noisy.clone().requires_grad_(True)
    value = loss(pred, truth)
    value.backward()
    assert torch.isfinite(value) and value > 0
    assert torch.isfinite(pred.grad).all()
    assert "MS-SSIM 5 scales" in loss.describe()


def test_msssim_scales_fit_small_planes():
    assert msssim_levels(64, 520, 3) == 5
    assert msssim_levels(16, 64, 3) == 3  # 16 -> 8 -> 4 (>= 3), 2 < 3
    assert msssim_levels(16, 64, 5) == 2
    truth, noisy = planes((2, 1, 16, 64))
    loss = Loss({"msssim": 1.0})
    assert torch.isfinite(loss(noisy, truth))
    assert "MS-SSIM 3 scales for 16x64" in loss.describe((16, 64))


def test_msssim_equals_pytorch_msssim_where_that_applies():
    truth, noisy = planes((2, 1, 64, 128))
    ours = msssim_index(noisy, truth, data_range=1.0, win=3, levels=5)
    theirs = ms_ssim(noisy, truth, data_range=1.0, win_size=3)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_msssim_gradient_finite_when_contrast_negative():
    x = torch.rand(1, 1, 40, 64)
    pred = (1 - x).clone().requires_grad_(True)  # anti-correlated: negative contrast terms
    Loss({"msssim": 1.0})(pred, x).backward()
    assert torch.isfinite(pred.grad).all()


def test_poisson_deviance_minimum_at_mu_equals_y():
    y = torch.tensor([0.0, 1.0, 3.0, 10.0])
    assert torch.isfinite(poisson_deviance(torch.tensor([0.5] * 4), y)).all()
    grid = torch.linspace(0.01, 20, 2000)
    for value in y[1:]:
        dev = poisson_deviance(grid, value.expand_as(grid))
        assert grid[dev.argmin()].item() == pytest.approx(value.item(), abs=0.02)
        assert dev.min() >= -1e-6
    assert poisson_deviance(y, y).abs().max() < 1e-5  # mu is clamped to >= 1e-6
    # y = 0: deviance 2 mu, smallest at the smallest mu
    assert poisson_deviance(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(4.0)


def test_damaged_weight_emphasises_damaged_bins():
    target = torch.zeros(1, 1, 4, 4)
    pred = torch.zeros(1, 1, 4, 4)
    pred[..., 0, 0] = 1.0  # error in one bin only
    damage = torch.zeros(1, 4, 4)
    damage[0, 0, 0] = 1.0
    plain = Loss({"l1": 1.0})(pred, target, damage).item()
    weighted = Loss({"l1": 1.0}, damaged_weight=5.0)(pred, target, damage).item()
    assert plain == pytest.approx(1 / 16)
    assert weighted == pytest.approx(5 / (15 + 5))


def test_weighted_sum_and_config():
    truth, noisy = planes()
    combined = Loss({"l1": 1.0, "mse": 2.0})(noisy, truth)
    separate = Loss({"l1": 1.0})(noisy, truth) + 2 * Loss({"mse": 1.0})(noisy, truth)
    torch.testing.assert_close(combined, separate)
    cfg = load_config(overrides=["loss.terms={l1: 1, msssim: 1}", "loss.damaged_weight=3"])
    loss = build_loss(cfg.loss)
    assert loss.terms == {"l1": 1.0, "msssim": 1.0} and loss.damaged_weight == 3.0
    assert "damaged bins weighted x3" in loss.describe()


@pytest.mark.parametrize("terms,kw", [({"ssimm": 1.0}, {}), ({}, {}), ({"l1": -1.0}, {}),
                                      ({"ssim": 1.0}, {"ssim_win": 4})])
def test_bad_loss_config(terms, kw):
    with pytest.raises(BadInputError):
        Loss(terms, **kw)


def test_loss_is_fp32_under_bf16_autocast():
    truth, noisy = planes()
    plain = Loss({"l1": 1.0, "msssim": 1.0})(noisy, truth)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = Loss({"l1": 1.0, "msssim": 1.0})(noisy.bfloat16(), truth)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain, rtol=1e-2, atol=1e-2)


def test_damaged_only_scores_only_damaged_bins():
    target, pred = planes(seed=1)
    damage = torch.zeros_like(pred)
    damage[..., 10:20, 5:25] = 0.3
    loss = Loss({"mse": 1.0}, damaged_only=True)
    sel = damage > 0
    expected = ((pred - target) ** 2)[sel].mean()
    torch.testing.assert_close(loss(pred, target, damage), expected)
    # undamaged bins do not matter at all
    changed = torch.where(sel, pred, pred + 5.0)
    torch.testing.assert_close(loss(changed, target, damage), expected)
    # no damaged bin in the batch (denoise data): the whole plane counts
    torch.testing.assert_close(loss(pred, target, torch.zeros_like(pred)),
                               ((pred - target) ** 2).mean())
    assert "damaged bins only" in loss.describe()
    assert build_loss(load_config(None, ["loss.damaged_only=true"], env={}).loss).damaged_only
