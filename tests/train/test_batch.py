"""Batch preparation on the device: thinning with the mask, normalisation, crops, seeds."""

from __future__ import annotations

import torch

from badblock.config import load_config
from badblock.train.batch import counts_to, device_generator, prepare_batch, step_seed


def _raw(n=2, k=1, views=6, bins=4):
    clean = torch.full((n, 2 * k + 1, views, bins), 10, dtype=torch.uint16)
    mask = torch.zeros((n, 2 * k + 1, views, bins))
    mask[:, :, 2:4, 1] = 1.0  # fully dead bins lose every count
    return {"clean": clean, "target": clean[:, k:k + 1].float(), "mask": mask}


def test_thinning_normalising_and_cropping():
    cfg = load_config(None, ["data.context=1", "data.normalise=max", "data.mask_channel=true"],
                      env={})
    gen = device_generator(torch.device("cpu"), 1)
    b = prepare_batch(_raw(), cfg.data, cfg.augment, torch.device("cpu"), gen, (1, 5),
                      augment=False)
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
    b = prepare_batch(raw, cfg.data, cfg.augment, torch.device("cpu"), None, (0, 6),
                      augment=False)
    torch.testing.assert_close(b.x, raw["clean"].float())


def test_step_seeds_differ_per_rank_and_step_and_fit_63_bits():
    seeds = {step_seed(s, r, t) for s in (0, 1) for r in range(4) for t in range(100)}
    assert len(seeds) == 800 and max(seeds) < 2**63 - 1
    assert step_seed(3, 1, 5) == step_seed(3, 1, 5)
    assert counts_to(torch.tensor([1, 2], dtype=torch.uint16), torch.device("cpu")).dtype == \
        torch.float32
