"""badblock evaluate under bad inputs, as a user meets them: a mask of another scanner, a broken
checkpoint, a second run into the same folder, NaN in a truth file, a mask of the wrong block.
Each is one line and exit 2 with nothing left under the output's name; real processes, real
files, a real checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from badblock.io import read_scan, write_scan
from badblock.physics import dead_block_mask, get_scanner
from tests.commands.test_repair_faults import _forged, _one_line
from tests.test_evaluate import write_sim

FAST = ["--baselines", "none,interp", "--no-fbp", "--set", "run.threads=1", "--set",
        "run.device=cpu"]


def _evaluate(*args, timeout=240):
    cmd = [sys.executable, "-m", "badblock", "evaluate", *FAST, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def scan(tmp_path):
    path, _, _ = write_sim(tmp_path, "scan_000", 0)
    return path


def test_a_mask_of_another_scanner_is_one_line_before_any_work(tmp_path, scan, checkpoint):
    out = tmp_path / "ev"
    # used to be a numpy broadcast traceback, with half of the damaged scans written
    res = _evaluate(scan, "--scanner", "mct", "--dead-blocks", "3:1", "--checkpoint",
                    checkpoint, "-o", out)
    _one_line(res, str(scan), "does not match the mask", "another scanner")
    assert not out.exists()


def test_a_broken_checkpoint_leaves_no_damaged_scans(tmp_path, scan, checkpoint):
    def poison(state):
        w = next(k for k, v in state["model"].items() if v.is_floating_point() and v.ndim == 4)
        state["model"][w] = torch.full_like(state["model"][w], float("nan"))

    nan = _forged(tmp_path, checkpoint, "nan.pt", poison)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    for ckpt, word in ((garbage, "garbage.pt"), (nan, "NaN or inf")):
        out = tmp_path / f"ev_{ckpt.stem}"
        res = _evaluate(scan, "--scanner", "mini", "--dead-blocks", "3:1", "--checkpoint", ckpt,
                        "-o", out)
        _one_line(res, word)
        assert not out.exists()  # the damaged/ scans were left under their final names
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_second_run_needs_force_and_then_replaces_the_folder(tmp_path, scan):
    out = tmp_path / "ev"
    first = _evaluate(scan, "--scanner", "mini", "--dead-blocks", "3:1", "-o", out)
    assert first.returncode == 0, first.stderr
    before = (out / "metrics.json").read_bytes()
    again = _evaluate(scan, "--scanner", "mini", "--dead-blocks", "5:1", "-o", out)
    _one_line(again, str(out), "already holds files", "--force")
    assert (out / "metrics.json").read_bytes() == before
    forced = _evaluate(scan, "--scanner", "mini", "--dead-blocks", "5:1", "-o", out, "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((out / "metrics.json").read_text())["mask"] == "mini dead blocks 5:1"
    # an output folder holding the inputs is never replaced, --force or not
    inside = _evaluate(scan, "--scanner", "mini", "--dead-blocks", "3:1", "-o", tmp_path,
                       "--force")
    _one_line(inside, "holds the input", str(scan))
    assert scan.exists()


@pytest.mark.parametrize("where, value", [("truth", np.nan), ("truth", np.inf),
                                          ("damaged", np.nan)])
def test_non_finite_inputs_are_refused_naming_the_file(tmp_path, scan, where, value):
    """NaN in a truth file gave null metrics and exit 0."""
    mask = dead_block_mask(get_scanner("mini"), "3:1")
    truth = tmp_path / "scan_000.truth.hs"
    damaged = tmp_path / "dam" / "scan_000.hs"
    complete = read_scan(scan)
    data = np.asarray(complete.data).astype(np.float32) * (1 - mask)
    damaged.parent.mkdir()
    write_scan(damaged, data, complete.header.replace(dtype=np.dtype("<f4"),
                                                      data_file=damaged.with_suffix(".s")))
    target = truth if where == "truth" else damaged
    bad = read_scan(target)
    arr = np.array(bad.data, dtype=np.float32)
    arr[1, 20, 3, 4] = value
    header = bad.header
    del bad
    for old in (target, target.with_suffix(".s")):
        old.unlink()
    write_scan(target, arr, header)
    out = tmp_path / "ev"
    res = _evaluate(scan, "--scanner", "mini", "--dead-blocks", "3:1", "--damaged", damaged,
                    "--no-mask-check", "-o", out)
    kind = "NaN" if np.isnan(value) else "inf"
    _one_line(res, target.with_suffix(".s").name, f"non-finite value ({kind})", "plane 20")
    assert not out.exists()


def test_a_mask_of_the_wrong_block_is_refused_unless_told(tmp_path, scan):
    from badblock.evaluate import write_damaged

    damaged = write_damaged([scan], dead_block_mask(get_scanner("mini"), "3:1"),
                            tmp_path / "dam", seed=1)
    out = tmp_path / "ev"
    res = _evaluate(scan, "--scanner", "mini", "--dead-blocks", "5:1", "--damaged", *damaged,
                    "-o", out)
    _one_line(res, str(damaged[0]), "5:1", "--no-mask-check")
    assert not out.exists()
    right = _evaluate(scan, "--scanner", "mini", "--dead-blocks", "3:1", "--damaged", *damaged,
                      "-o", out)
    assert right.returncode == 0, right.stderr
    assert json.loads((out / "metrics.json").read_text())["mask_check"][0]["checked"] is True
    told = _evaluate(scan, "--scanner", "mini", "--dead-blocks", "5:1", "--damaged", *damaged,
                     "--no-mask-check", "-o", tmp_path / "ev2")
    assert told.returncode == 0, told.stderr
    check = json.loads((tmp_path / "ev2" / "metrics.json").read_text())["mask_check"]
    assert check == [{"checked": False, "why": "switched off (--no-mask-check)"}]
