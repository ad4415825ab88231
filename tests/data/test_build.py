"""Data from a config: the store found under the output or data root, checks of the data
section, the datasets and the validation mask."""

from __future__ import annotations

import numpy as np
import pytest

from badblock.data.build import build_data, open_store, scanner_for, validation_mask
from badblock.errors import BadInputError
from badblock.physics.mask import dead_block_mask
from tests.train.trainer_store import make_store, tiny_config


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    make_store(out / "store")
    return out


def test_store_under_the_output_root_else_the_data_root(out, tmp_path):
    assert open_store("store", out, tmp_path).path == out / "store"
    assert open_store("store", tmp_path, out).path == out / "store"
    with pytest.raises(BadInputError, match="no such store"):
        open_store("nothing", out, tmp_path)


def test_datasets_info_and_validation_mask(out):
    cfg = tiny_config(out, **{"data.views_to": 40, "scanner.dead_blocks": '["9:2"]'})
    train_ds, val_ds, info = build_data(cfg, 4)
    assert info["views"] == 36 and info["views_to"] == 40 and info["bins"] == 64
    # scored against the measured scans; the store's truth is only logged
    assert (info["train_scans"], info["val_scans"], info["reference"]) == (2, 1, "measured")
    assert info["truth"] is True
    assert len(val_ds) == cfg.train.val_batches * cfg.data.batch_size
    store = open_store("store", out, out)
    sc = scanner_for(store, "vision")  # the store's own scanner wins
    assert sc.name == "mini"
    assert np.array_equal(validation_mask(cfg.scanner, store, sc, out),
                          dead_block_mask("mini", [(9, 2)]))


@pytest.mark.parametrize("key, value, message", [
    ("data.context", -1, "data.context"), ("data.batch_size", 0, "data.batch_size"),
    ("data.epoch_size", 2, "data.epoch_size"), ("data.keep_rate", 0.0, "data.keep_rate"),
    ("data.views_to", 38, "data.views_to"), ("data.views_to", 32, "data.views_to"),
])
def test_bad_data_values(out, key, value, message):
    with pytest.raises(BadInputError, match=message):
        build_data(tiny_config(out, **{key: value}), 4)


def test_bins_must_divide_by_the_depth(out):
    with pytest.raises(BadInputError, match="model.depth"):
        build_data(tiny_config(out), 128)  # 36 views pad to 128; 64 bins do not divide
