"""The checkpoint dict a run writes, and restoring a run's state from it."""

from __future__ import annotations

import pytest
import torch

from badblock.config import load_config
from badblock.errors import BadInputError
from badblock.models import UNet
from badblock.train.checkpoint import TrainState, checkpoint_dict, restore
from badblock.train.schedules import Schedule
from badblock.train.setup import layout_for
from badblock.utils.checkpoint import REQUIRED_KEYS, load_checkpoint, save_checkpoint

INFO = {"views": 36, "views_to": 36, "bins": 64, "scanner": "mini"}


def _parts(seed=0):
    torch.manual_seed(seed)
    cfg = load_config(None, ["model.width=4", "data.mask_channel=true"], env={})
    model = UNet(in_channels=6, width=4, depth=2, bottom_convs=1)
    return cfg, model, Schedule(model, cfg.optim), torch.Generator().manual_seed(5)


def _dict(cfg, model, ema, schedule, state, gen):
    """checkpoint_dict with the run's own input layout (5 context planes + their masks)."""
    return checkpoint_dict(cfg, INFO, layout_for(cfg), model, ema, schedule, state, gen,
                           world_size=1)


def test_dict_holds_what_inference_and_resume_need(tmp_path):
    cfg, model, schedule, gen = _parts()
    state = TrainState(epoch=2, epoch_step=3, step=11, history=[{"epoch": 2}], best=0.5)
    ck = _dict(cfg, model, None, schedule, state, gen)
    assert set(REQUIRED_KEYS) <= set(ck) and ck["format"] == "badblock-checkpoint"
    assert "model_raw" not in ck and ck["model_config"] == model.config
    assert ck["data"] == {"context": 2, "normalise": "max", "mask_channel": True,
                          "mask_stack": False, "per_lor": False, "prior_widths": [],
                          "margin": 0, "fill_prior": False, "count_channel": False,
                          "multiple": 4, "views_to": 36,
                          "views": 36,
                          "bins": 64, "task": "inpaint", "target": "measured", "scanner": "mini",
                          "dead_weight": 1.0}
    assert (ck["epoch"], ck["epoch_step"], ck["step"], ck["done"]) == (2, 3, 11, False)
    assert ck["config"]["model"]["width"] == 4 and ck["world_size"] == 1
    ema = UNet(in_channels=6, width=4, depth=2, bottom_convs=1)
    with_ema = _dict(cfg, model, ema, schedule, state, gen)
    assert with_ema["model"].keys() == with_ema["model_raw"].keys()
    assert torch.equal(with_ema["model_raw"]["last_conv2.weight"], model.last_conv2.weight)
    assert torch.equal(with_ema["model"]["last_conv2.weight"], ema.last_conv2.weight)
    save_checkpoint(tmp_path / "ck.pt", with_ema)
    assert load_checkpoint(tmp_path / "ck.pt")["metrics"]["best"] == 0.5


def test_restore_gives_back_weights_state_and_generator():
    cfg, model, schedule, gen = _parts(0)
    state = TrainState(epoch=1, step=4, history=[{"epoch": 1}], best=0.25)
    state.running["batches"] = 4
    ck = _dict(cfg, model, None, schedule, state, gen)
    expect = torch.rand(3, generator=gen)
    _, other, other_schedule, other_gen = _parts(1)
    back = restore(ck, "ck.pt", other, None, other_schedule, other_gen, world_size=1)
    assert (back.epoch, back.step, back.best, back.running["batches"]) == (1, 4, 0.25, 4)
    assert torch.equal(other.last_conv2.weight, model.last_conv2.weight)
    assert torch.equal(torch.rand(3, generator=other_gen), expect)
    back.next_epoch()
    assert (back.epoch, back.epoch_step, back.running["batches"]) == (2, 0, 0)
    wrong = UNet(in_channels=6, width=8, depth=2, bottom_convs=1)
    with pytest.raises(BadInputError, match="does not fit the model") as err:
        restore(ck, "ck.pt", wrong, None, Schedule(wrong, cfg.optim), other_gen, world_size=1)
    assert "\n" not in str(err.value) and "another train.run" in str(err.value)
