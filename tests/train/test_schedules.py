"""Schedules: Adam betas, step decay, warm restarts, SGDR, and identical resumption."""

from __future__ import annotations

import io
import math

import pytest
import torch

from badblock.config import load_config
from badblock.errors import BadInputError
from badblock.train.schedules import Schedule

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of")


def optim_cfg(*overrides):
    return load_config(overrides=list(overrides)).optim


def run(schedule, model, epochs, start=0, seed=0):
    """A few real Adam steps per epoch; returns per-epoch (lr, reset) and the loss sequence."""
    g = torch.Generator().manual_seed(seed + start)
    lrs, losses = [], []
    for epoch in range(start, epochs):
        for _ in range(2):
            x = torch.randn(4, 3, generator=g)
            loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
            schedule.optimizer.zero_grad()
            loss.backward()
            schedule.optimizer.step()
            losses.append(loss.item())
        lrs.append((schedule.lr, schedule.end_epoch(epoch)))
    return lrs, losses


def test_adam_with_tutorial_betas():
    s = Schedule(torch.nn.Linear(3, 1), optim_cfg())
    assert isinstance(s.optimizer, torch.optim.Adam)
    assert s.optimizer.param_groups[0]["betas"] == (0.5, 0.999)


def test_step_decay():
    s = Schedule(torch.nn.Linear(3, 1), optim_cfg("optim.step_size=2", "optim.gamma=0.1"))
    lrs = [(s.end_epoch(e), s.lr)[1] for e in range(5)]
    assert lrs == pytest.approx([1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


def test_warm_restart_periods_grow():
    cfg = optim_cfg("optim.schedule=warm_restart", "optim.warm_reset_length=3",
                    "optim.warm_reset_increment=2", "optim.step_size=1", "optim.gamma=0.5")
    model = torch.nn.Linear(3, 1)
    s = Schedule(model, cfg)
    first = s.optimizer
    resets = []
    for e in range(18):
        lr_before = s.lr
        if s.end_epoch(e):
            resets.append(e + 1)
            assert lr_before < 1e-3 and s.lr == pytest.approx(1e-3)
    assert resets == [3, 6, 11, 18]  # periods 3, 3, 5, 7
    assert s.optimizer is not first
    assert not s.optimizer.state  # a fresh Adam: no moments


def test_cosine_restarts_follow_sgdr():
    cfg = optim_cfg("optim.schedule=cosine", "optim.cosine_t0=2", "optim.cosine_mult=2",
                    "optim.lr_min=0")
    s = Schedule(torch.nn.Linear(3, 1), cfg)
    lrs = [s.lr] + [(s.end_epoch(e), s.lr)[1] for e in range(6)]
    t_cur = [0, 1, 0, 1, 2, 3, 0]
    t_i = [2, 2, 4, 4, 4, 4, 8]
    expect = [0.5e-3 * (1 + math.cos(math.pi * c / t)) for c, t in zip(t_cur, t_i, strict=True)]
    assert lrs == pytest.approx(expect)


@pytest.mark.parametrize("kind", ["step", "warm_restart", "cosine", "none"])
def test_resume_continues_identically(kind):
    cfg = optim_cfg(f"optim.schedule={kind}", "optim.step_size=2", "optim.warm_reset_length=3",
                    "optim.warm_reset_increment=1", "optim.cosine_t0=3")
    torch.manual_seed(0)
    model_a = torch.nn.Linear(3, 1)
    model_b = torch.nn.Linear(3, 1)
    model_b.load_state_dict(model_a.state_dict())

    full = Schedule(model_a, cfg)
    lrs_full, losses_full = [], []
    for start, stop in ((0, 4), (4, 10)):
        lrs, losses = run(full, model_a, stop, start)
        lrs_full += lrs
        losses_full += losses

    first = Schedule(model_b, cfg)
    lrs_1, losses_1 = run(first, model_b, 4)
    buffer = io.BytesIO()
    torch.save({"schedule": first.state_dict(), "model": model_b.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    model_c = torch.nn.Linear(3, 1)
    model_c.load_state_dict(saved["model"])
    resumed = Schedule(model_c, cfg)
    resumed.load_state_dict(saved["schedule"])
    lrs_2, losses_2 = run(resumed, model_c, 10, 4)

    assert lrs_1 + lrs_2 == lrs_full
    assert losses_1 + losses_2 == losses_full  # bitwise on CPU
    assert torch.equal(model_a.weight, model_c.weight)


def test_bad_schedule_config():
    with pytest.raises(BadInputError):
        Schedule(torch.nn.Linear(3, 1), optim_cfg("optim.warm_reset_length=0"))
    with pytest.raises(BadInputError):
        Schedule(torch.nn.Linear(3, 1), optim_cfg("optim.betas=[0.5, 1.5]"))
    s = Schedule(torch.nn.Linear(3, 1), optim_cfg())
    with pytest.raises(BadInputError, match="schedule"):
        Schedule(torch.nn.Linear(3, 1), optim_cfg("optim.schedule=cosine")).load_state_dict(
            s.state_dict())
