"""badblock repair under faults and bad inputs, as a user meets them: a full disk, SIGKILL while
it writes or replaces, a broken or foreign checkpoint, NaN in a scan, a mask of the wrong block.
Each is one line and exit 2 with nothing under the output's name (or, for legitimate input, a
correct output); real processes, real files, a real checkpoint."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from badblock.io import read_scan, write_scan
from badblock.utils.checkpoint import load_checkpoint, save_checkpoint
from tests.physics.test_detect import DEMO_COUNTS, damaged
from tests.test_repair import _damaged, _write

BASE = ["--set", "run.threads=1", "--set", "run.device=cpu"]


def _repair(checkpoint, *args, timeout=240):
    cmd = [sys.executable, "-m", "badblock", "repair", "--checkpoint", str(checkpoint),
           *BASE, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _one_line(res, *words):
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    for w in words:
        assert w in res.stderr, res.stderr


def _scan(tmp_path, dtype=np.uint16, name="dam.hs"):
    counts, mask = _damaged(dtype=dtype)
    return _write(tmp_path / name, counts, "interfile", "linear"), counts, mask


def _forged(tmp_path, checkpoint, name, change):
    """A copy of the real checkpoint with ``change(state)`` applied (what a bit flip, another
    scanner's training or another model would have written)."""
    state = load_checkpoint(checkpoint)
    change(state)
    return save_checkpoint(tmp_path / name, state)


def test_full_disk_is_one_line_not_sigbus_and_leaves_nothing(tmp_path, checkpoint, small_disk):
    src, _, _ = _scan(tmp_path)
    disk = small_disk(256)  # the scan's 788 kB do not fit
    res = _repair(checkpoint, "--scanner", "mini", "--dead-blocks", "3:1", src, "-o", disk)
    _one_line(res, "No space left on device", "dam.s")
    assert list(disk.iterdir()) == []


def test_nan_weights_stop_the_repair_and_write_nothing(tmp_path, checkpoint):
    src, _, _ = _scan(tmp_path)

    def poison(state):
        w = next(k for k, v in state["model"].items() if v.is_floating_point() and v.ndim == 4)
        state["model"][w] = torch.full_like(state["model"][w], float("nan"))

    bad = _forged(tmp_path, checkpoint, "nan.pt", poison)
    out = tmp_path / "out"
    res = _repair(bad, "--scanner", "mini", "--dead-blocks", "3:1", src, "-o", out)
    _one_line(res, "nan.pt", "NaN or inf", "damaged bins")
    assert not out.exists()  # not even the folder -o named


def test_nan_or_inf_in_a_float_scan_is_refused_naming_the_bin(tmp_path, checkpoint):
    counts, _ = _damaged(dtype=np.float32)
    for value, kind in ((np.nan, "NaN"), (np.inf, "inf")):
        bad = counts.copy()
        bad[2, 40, 3, 7] = value
        src = _write(tmp_path / f"f{kind}.hs", bad, "interfile", "linear")
        out = tmp_path / f"out{kind}"
        res = _repair(checkpoint, "--scanner", "mini", "--dead-blocks", "3:1", src, "-o", out)
        _one_line(res, f"f{kind}.s", f"({kind}) at TOF 2, plane 40")
        assert not out.exists() or list(out.iterdir()) == []


def test_a_checkpoint_of_another_scanner_or_model_is_refused(tmp_path, checkpoint):
    src, _, _ = _scan(tmp_path)
    out = tmp_path / "out"
    mct = _forged(tmp_path, checkpoint, "mct.pt", lambda s: s["data"].update(
        scanner="mct", views=168, bins=400))
    res = _repair(mct, "--scanner", "mini", "--dead-blocks", "3:1", src, "-o", out)
    _one_line(res, "mct.pt was trained on mct scans", "this scan is [57, 36, 64]")
    views = _forged(tmp_path, checkpoint, "views.pt", lambda s: s["data"].update(
        scanner=None, views=50))
    res = _repair(views, "--scanner", "mini", "--dead-blocks", "3:1", src, "-o", out)
    _one_line(res, "views.pt was trained on 50 views x 64 bins")
    wide = _forged(tmp_path, checkpoint, "wide.pt", lambda s: s["model_config"].update(
        width=2 * s["model_config"].get("width", 4)))
    res = _repair(wide, "--scanner", "mini", "--dead-blocks", "3:1", src, "-o", out)
    _one_line(res, "wide.pt: checkpoint does not fit the model", "tensors of another shape")
    assert not out.exists()


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_the_mask_is_checked_against_the_counts(tmp_path, checkpoint, scale):
    # simulated by the projector with LORs through dead crystals removed: not the mask's code
    counts = damaged(tmp_path, blocks=["3:1"], counts=DEMO_COUNTS * scale)
    src = write_scan(tmp_path / "sim.hs", counts)
    res = _repair(checkpoint, "--scanner", "mini", "--dead-blocks", "3:1", src, "-o",
                  tmp_path / "right")
    assert res.returncode == 0, res.stderr  # the true block: no false alarm at either level
    report = json.loads((tmp_path / "right" / "repair_summary.json").read_text())
    check = report["scans"][0]["mask_check"]
    assert check["checked"] and check["counts_in_fully_dead_bins"] == 0
    assert [d["index"] for d in check["declared"]] == ["3:1"]
    res = _repair(checkpoint, "--scanner", "mini", "--dead-blocks", "5:1", src, "-o",
                  tmp_path / "wrong")
    _one_line(res, "sim.hs", "block 5:1", "counts", "--no-mask-check")
    assert not (tmp_path / "wrong").exists()
    res = _repair(checkpoint, "--scanner", "mini", "--dead-blocks", "5:1", "--no-mask-check",
                  src, "-o", tmp_path / "forced")
    assert res.returncode == 0, res.stderr
    forced = json.loads((tmp_path / "forced" / "repair_summary.json").read_text())
    assert forced["scans"][0]["mask_check"] == {"checked": False,
                                                "why": "switched off (--no-mask-check)"}


def test_dead_blocks_auto_repairs_with_what_detect_finds(tmp_path, checkpoint):
    counts = damaged(tmp_path, blocks=["3:1"])
    src = write_scan(tmp_path / "sim.hs", counts)
    res = _repair(checkpoint, "--scanner", "mini", "--dead-blocks", "auto", src, "-o",
                  tmp_path / "auto")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "auto" / "repair_summary.json").read_text())
    assert summary["detect"][0]["dead_blocks"] == ["3:1"]
    assert "detect" in summary["scans"][0]["mask_check"]["why"]
    from badblock.physics import dead_block_mask

    mask = dead_block_mask("mini", "3:1")
    assert summary["scans"][0]["bins_replaced"] == int((mask > 0).sum()) * counts.shape[0]


def _state(out_hs, old, new):
    """What a reader finds at the output: 'none' (no header), 'old' or 'new'; a header over
    data it does not describe fails."""
    if not out_hs.exists():
        return "none"
    data = np.asarray(read_scan(out_hs).data)
    if data.dtype == old.dtype and np.array_equal(data, old):
        return "old"
    assert data.dtype == new.dtype and np.array_equal(data, new), "header over foreign data"
    return "new"


def test_sigkill_at_random_moments_of_a_forced_replacement(tmp_path, checkpoint):
    src, counts, _ = _scan(tmp_path)
    args = ["--scanner", "mini", "--dead-blocks", "3:1"]
    t0 = time.monotonic()
    ref = _repair(checkpoint, *args, src, "-o", tmp_path / "ref" / "dam.hs")
    duration = time.monotonic() - t0
    assert ref.returncode == 0, ref.stderr
    new = np.asarray(read_scan(tmp_path / "ref" / "dam.hs").data)
    old = np.random.default_rng(1).random(counts.shape, dtype=np.float32)  # another scan
    out = tmp_path / "out"
    rng = random.Random(7)
    cmd = [sys.executable, "-m", "badblock", "repair", "--checkpoint", str(checkpoint), *BASE,
           *args, "--force", str(src), "-o", str(out / "dam.hs")]
    states = []
    for _ in range(6):
        write_scan(out / "dam.hs", old, force=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 1.05) * duration)  # most of a run is its start-up
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        states.append(_state(out / "dam.hs", old, new))
    # the next run removes what the killed ones left, and ends with the new scan alone
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    assert _state(out / "dam.hs", old, new) == "new"
    assert sorted(p.name for p in out.iterdir()) == ["config.resolved.yaml", "dam.hs", "dam.s",
                                                     "repair_summary.json"], states
