"""Fixtures of the command tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real checkpoint from one tiny training epoch on the mini scanner."""
    import torch

    from badblock.train.loop import train
    from tests.train.trainer_store import make_store, tiny_config

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("repair_ckpt")
    make_store(root / "store", n_train=1, n_val=1)
    run = train(tiny_config(root, **{"train.epochs": 1}))
    return run / "checkpoint_final.pt"
