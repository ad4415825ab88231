"""Batch preparation on the device: thinning with the mask, normalisation, crops, seeds."""

from __future__ import annotations

import torch

from badblock.config import load_config
from badblock.inference import ChannelLayout
from badblock.train.batch import (
    Batch,
    batch_loss,
    counts_to,
    device_generator,
    prepare_batch,
    step_seed,
)
from badblock.train.losses import Loss


def _raw(n=2, k=1, views=6, bins=4):
    clean = torch.full((n, 2 * k + 1, views, bins), 10, dtype=torch.uint16)
    mask = torch.zeros((n, 2 * k + 1, views, bins))
    mask[:, :, 2:4, 1] = 1.0  # fully dead bins lose every count
    return {"clean": clean, "target": clean[:, k:k + 1].float(), "mask": mask}


def test_thinning_normalising_and_cropping():
    cfg = load_config(None, ["data.context=1", "data.normalise=max", "data.mask_channel=true"],
                      env={})
    gen = device_generator(torch.device("cpu"), 1)
    b = prepare_batch(_raw(), ChannelLayout.of(cfg.data, cfg.model), "inpaint", "measured",
                      cfg.augment, torch.device("cpu"), gen, (1, 5), augment=False)
    assert b.x.shape == (2, 4, 6, 4)  # 3 count planes + the centre plane's mask
    assert (b.x[:, :3, 2:4, 1] == 0).all() and (b.x[:, :3, 0] == 10 / (10 + 1e-8)).all()
    torch.testing.assert_close(b.x[:, 3], _raw()["mask"][:, 1])
    assert b.target.shape == (2, 1, 4, 4) and b.damage.shape == (2, 1, 4, 4)
    torch.testing.assert_close(b.target * b.scale, torch.full((2, 1, 4, 4), 10.0))
    assert (b.inp_centre[:, 0, 1:3, 1] == 0).all() and b.truth is None


def test_paired_task_is_not_thinned():
    cfg = load_config(None, ["data.task=paired", "data.context=1", "data.normalise=none"],
                      env={})
    raw = _raw()
    b = prepare_batch(raw, ChannelLayout.of(cfg.data, cfg.model), "paired", "measured",
                      cfg.augment, torch.device("cpu"), None, (0, 6), augment=False)
    torch.testing.assert_close(b.x, raw["clean"].float())


def test_step_seeds_differ_per_rank_and_step_and_fit_63_bits():
    seeds = {step_seed(s, r, t) for s in (0, 1) for r in range(4) for t in range(100)}
    assert len(seeds) == 800 and max(seeds) < 2**63 - 1
    assert step_seed(3, 1, 5) == step_seed(3, 1, 5)
    assert counts_to(torch.tensor([1, 2], dtype=torch.uint16), torch.device("cpu")).dtype == \
        torch.float32


def _hand_batch():
    """One sample, 1 x 4 bins: f = 0, 0.5, 1, 0.25; complete measured target m, surviving y."""
    f = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 1, 4)
    m = torch.tensor([8.0, 10.0, 6.0, 12.0]).view(1, 1, 1, 4)
    y = torch.tensor([8.0, 4.0, 0.0, 9.0]).view(1, 1, 1, 4)
    scale = torch.full((1, 1, 1, 1), 2.0)
    z = torch.zeros(1, 1, 1, 4)
    return Batch(x=z, out_scale=scale, crop=(0, 1), target=m / scale, damage=f, scale=scale,
                 inp_centre=y)


def test_lost_target_is_the_lost_counts_scaled_to_a_whole_bin():
    b = _hand_batch()
    counts = torch.tensor([7.0, 11.0, 5.0, 10.0]).view(1, 1, 1, 4)
    loss = Loss({"mse": 1.0}, damaged_only=True)
    # damaged bins 1..3: r = (m - y) / f = 12, 6, 12 counts; prediction 11, 5, 10; / scale 2
    expect = ((11 - 12) ** 2 + (5 - 6) ** 2 + (10 - 12) ** 2) / 3 / 4
    got = batch_loss(loss, counts, b, "lost")
    assert abs(float(got) - expect) < 1e-6
    # lost_power 2: errors weighted by f^2 (the lost counts' own error)
    expect_2 = ((0.5 * (11 - 12)) ** 2 + (5 - 6) ** 2 + (0.25 * (10 - 12)) ** 2) / 3 / 4
    assert abs(float(batch_loss(loss, counts, b, "lost", 2.0)) - expect_2) < 1e-6
    # complete: prediction against m on the same bins
    expect_c = ((11 - 10) ** 2 + (5 - 6) ** 2 + (10 - 12) ** 2) / 3 / 4
    assert abs(float(batch_loss(loss, counts, b, "complete")) - expect_c) < 1e-6


def test_lost_target_is_unbiased_for_the_truth_where_the_complete_one_copies_noise():
    """Over many noise draws of a partly damaged bin: E[r] = lam, Var r = lam / f, and r is
    uncorrelated with the surviving counts y the network sees -- while the complete target m
    is strongly correlated with y (its loss-optimal answer y + f lam copies y's noise)."""
    g = torch.Generator().manual_seed(0)
    lam, f, n = 20.0, 0.25, 200_000
    m = torch.poisson(torch.full((n,), lam), generator=g)
    y = torch.binomial(m, torch.full((n,), 1 - f), generator=g)
    r = (m - y) / f
    assert abs(float(r.mean()) - lam) < 0.1
    assert abs(float(r.var()) - lam / f) < 0.02 * lam / f  # Var r = lam / f

    def corr(a, b):
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    assert abs(corr(r, y)) < 0.01 and corr(m, y) > 0.8
