"""RNG states: captured into a checkpoint and restored, every stream continues where it was."""

from __future__ import annotations

import random

import numpy as np
import torch

from badblock.train.rng import capture_rng, restore_rng
from badblock.utils.checkpoint import load_checkpoint, save_checkpoint


def _state():
    return {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "model_config": {"width": 4},
            "data": {"context": 2}, "epoch": 3, "step": 17, "metrics": {"history": [{"a": 1.5}]}}


def test_rng_states_survive_a_checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(5)
    nrng = np.random.default_rng(9)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint(tmp_path / "ck.pt", {**_state(), "rng": capture_rng({"g": gen}, nrng)})
    expect = (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen),
              nrng.random())
    for _ in range(3):  # disturb every stream
        random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen)
        nrng.random()
    restore_rng(load_checkpoint(tmp_path / "ck.pt")["rng"], {"g": gen}, nrng)
    got = (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen),
           nrng.random())
    assert got[0] == expect[0] and got[1] == expect[1] and got[4] == expect[4]
    assert torch.equal(got[2], expect[2]) and torch.equal(got[3], expect[3])
