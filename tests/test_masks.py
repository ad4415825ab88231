"""The mask stage as a library call: the mask, its picture and summary, an imported mask."""

from __future__ import annotations

import json

import numpy as np
import pytest

from badblock.config import load_config
from badblock.errors import BadInputError
from badblock.masks import format_summary, make_mask
from badblock.physics.mask import dead_block_mask


def test_make_mask_writes_mask_picture_summary_and_config(tmp_path):
    cfg = load_config(None, ["scanner.name=mini", 'scanner.dead_blocks=["3:1"]',
                             'scanner.dead_crystals=["5:0"]'])
    out = tmp_path / "m" / "mask.npy"
    info = make_mask(cfg, out)
    want = dead_block_mask("mini", [(3, 1)], [(5, 0)])
    assert np.array_equal(np.load(out), want)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved == json.loads(json.dumps(info))
    assert saved["source"] == "dead blocks 3:1 crystals 5:0"
    assert saved["dead_blocks"] == [[3, 1]] and saved["shape"] == list(want.shape)
    assert saved["bins_affected"] == int((want > 0).sum())
    assert (out.parent / "config.resolved.yaml").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "config.resolved.yaml", "mask.json", "mask.npy", "mask.png"]
    text = format_summary(info, out)
    assert text.startswith("mini mask [plane, view, bin] = [57, 36, 64], dead blocks 3:1")
    with pytest.raises(BadInputError, match="already exists"):
        make_mask(cfg, out)


def test_make_mask_imports_a_mask_file_checked_against_the_scanner(tmp_path):
    mask = dead_block_mask("mini", [(9, 2)])
    np.save(tmp_path / "given.npy", mask)
    cfg = load_config(None, ["scanner.name=mini", f"scanner.mask={tmp_path / 'given.npy'}"])
    info = make_mask(cfg, tmp_path / "out.npy")
    assert info["source"] == f"imported from {tmp_path / 'given.npy'}"
    assert info["dead_blocks"] == [] and np.array_equal(np.load(tmp_path / "out.npy"), mask)
    vision = load_config(None, ["scanner.name=vision", f"scanner.mask={tmp_path / 'given.npy'}"])
    with pytest.raises(BadInputError, match="does not match scanner vision"):
        make_mask(vision, tmp_path / "v.npy")
    assert not (tmp_path / "v.npy").exists() and not (tmp_path / "v.png").exists()
    with pytest.raises(BadInputError, match=".npy"):
        make_mask(cfg, tmp_path / "out.txt")
