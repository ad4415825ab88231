"""Run set-up: impossible train values refused, real views, bf16 and layout choice,
sensitivity checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from badblock.config import load_config
from badblock.errors import BadInputError
from badblock.train.setup import check_train_config, real_views, sensitivity_for, use_amp


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


def test_sensitivity_map_needs_inpaint_on_a_scanner_without_rolls():
    cfg = load_config("mini", env={})
    info = {"views": 36, "views_to": 40, "bins": 64, "scanner": "mini"}
    sens = sensitivity_for("inpaint", cfg.augment, info)
    assert sens.shape == (40, 64) and sens.dtype == np.float32 and sens.max() == 1.0
    with pytest.raises(BadInputError, match="inpaint"):
        sensitivity_for("denoise", cfg.augment, info)
    with pytest.raises(BadInputError, match="view_roll"):
        sensitivity_for("inpaint", load_config(None, [], env={}).augment, info)


def test_channels_last_choice():
    from badblock.train.setup import use_channels_last
    from badblock.utils.hardware import native_bf16

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_channels_last("auto", cuda) and use_channels_last(True, cpu)
    assert use_channels_last("auto", cpu) == native_bf16()
    assert not use_channels_last(False, cuda)
    assert load_config("mini", env={}).train.channels_last is True  # measured faster there
    assert load_config("vision", env={}).train.channels_last == "auto"
