"""Run set-up: impossible train values refused, real views, bf16 and channels-last choice,
layout checks."""

from __future__ import annotations

import pytest
import torch

from badblock.config import load_config
from badblock.errors import BadInputError
from badblock.train.setup import check_train_config, layout_for, real_views, use_amp


@pytest.mark.parametrize("key, value", [("epochs", 0), ("max_steps", -1), ("ema", 1.0),
                                        ("val_batches", 0)])
def test_impossible_train_values(key, value):
    cfg = load_config(None, [f"train.{key}={value}"], env={})
    with pytest.raises(BadInputError, match=f"train.{key}"):
        check_train_config(cfg.train, torch.device("cpu"))


def test_real_views_and_amp():
    assert real_views({"views": 50, "views_to": 64}) == (7, 57)
    assert real_views({"views": 36, "views_to": 36}) == (0, 36)
    from badblock.utils.hardware import native_bf16

    # auto: bf16 on a CPU only with bf16 units (this test's machine may have them or not)
    assert use_amp("bf16", torch.device("cpu"))
    assert use_amp("auto", torch.device("cpu")) == native_bf16()
    assert not use_amp("off", torch.device("cpu"))
    assert use_amp("auto", torch.device("cuda")) and not use_amp("off", torch.device("cuda"))


def test_channels_last_choice():
    from badblock.train.setup import use_channels_last
    from badblock.utils.hardware import native_bf16

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_channels_last("auto", cuda) and use_channels_last(True, cpu)
    assert use_channels_last("auto", cpu) == native_bf16()
    assert not use_channels_last(False, cuda)
    assert load_config("mini", env={}).train.channels_last == "auto"
    assert load_config("vision", env={}).train.channels_last == "auto"


def test_layout_of_the_mini_preset_and_what_it_refuses():
    layout = layout_for(load_config("mini", env={}))
    assert layout.per_lor and layout.mask_stack and layout.prior_channel == layout.in_channels - 1
    # 5 count planes, 5 mask planes, the sensitivity, the normconv prior, the model-based fill
    assert layout.in_channels == 5 + 5 + 1 + 1 + 1 and layout.margin == 18
    assert layout.fill_prior
    for sets, match in [
        (["data.task=denoise", "loss.target=complete"], "per_lor"),
        (["augment.view_roll=0.5"], "view_roll"),
        (["model.prior_widths=[]", "model.fill_prior=false"], "prior_residual"),
        (["data.fills="], "needs data.fills"),
        (["augment.dose=0.5"], "augment.dose"),
        (["loss.damaged_only=false"], "damaged_only"),
        (["data.target=truth"], "measured"),
        (["model.dead_weight=1.5"], "within"),
        (["model.dead_weight=-0.1"], "within"),
        (["model.dead_weight=0.5", "model.prior_residual=false"], "dead_weight"),
        (["model.dead_weight=0", "data.mask_channel=false", "data.mask_stack=false",
          "model.prior_widths=[]"], "dead_weight"),
    ]:
        with pytest.raises(BadInputError, match=match):
            layout_for(load_config("mini", sets, env={}))
