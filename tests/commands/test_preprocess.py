"""badblock preprocess as a user runs it: one-line refusals with exit 2, then idempotent reruns."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from badblock.io import write_scan
from tests.data.test_preprocess import ROOT, SHAPE, SHAPE_SET, counts, raw_scans


def cli(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BADBLOCK_")}
    env.update(BADBLOCK_PROGRESS="0", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "badblock", "preprocess", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def assert_refused(tmp_path, proc, name):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("badblock preprocess: error: "), proc.stderr
    assert name in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_wrong_size_for_shape(tmp_path):
    raw_scans(tmp_path / "raw", n=1, truth=False)
    proc = cli(tmp_path / "raw" / "s0.s", "-o", tmp_path / "out", "--set",
               "preprocess.shape=[3,5,4,7]")
    assert_refused(tmp_path, proc, "s0.s")
    assert "size" in proc.stderr


def test_cli_no_match_and_missing_data_file(tmp_path):
    proc = cli(tmp_path / "nothing" / "*.hs", "-o", tmp_path / "out")
    assert_refused(tmp_path, proc, "*.hs")
    a = counts(0)
    write_scan(tmp_path / "sim" / "scan_000.hs", a)
    (tmp_path / "sim" / "scan_000.s").unlink()
    proc = cli(tmp_path / "sim", "-o", tmp_path / "out")
    assert_refused(tmp_path, proc, "scan_000")


def test_cli_success_then_up_to_date(tmp_path):
    raw_scans(tmp_path / "raw", n=2)
    proc = cli(tmp_path / "raw", "-o", tmp_path / "out", "--set", SHAPE_SET)
    assert proc.returncode == 0, proc.stderr
    assert "built: 2 scan(s)" in proc.stdout
    proc = cli(tmp_path / "raw", "-o", tmp_path / "out", "--set", SHAPE_SET)
    assert proc.returncode == 0 and "up to date" in proc.stdout


def test_cli_reports_nan_through_subprocess(tmp_path):
    f = np.ones(SHAPE, np.float32)
    f[1, 1, 1, 1] = np.inf
    f.tofile(tmp_path / "bad.s")
    proc = cli(tmp_path / "bad.s", "-o", tmp_path / "out", "--set", SHAPE_SET,
               "--set", "preprocess.dtype=float32")
    assert_refused(tmp_path, proc, "bad.s")
    assert "NaN or infinite" in proc.stderr


def test_cli_paired_inputs_are_checked_against_the_mask(tmp_path):
    """--kind paired: the inputs are damaged scans, so the mask must fit their counts; a mask
    of the wrong block was stored and trained on without a word."""
    import json

    from badblock.evaluate import write_damaged
    from badblock.physics import dead_block_mask, get_scanner
    from tests.test_evaluate import write_sim

    mini = get_scanner("mini")
    complete, _, _ = write_sim(tmp_path, "scan_000", 0)
    (damaged,) = write_damaged([complete], dead_block_mask(mini, "3:1"), tmp_path / "dam",
                               seed=2)
    for blocks in ("3:1", "5:1"):
        np.save(tmp_path / f"m{blocks[0]}.npy", dead_block_mask(mini, blocks))
    args = (damaged, "--kind", "paired", "--targets", complete, "-o", tmp_path / "out")
    wrong = cli(*args, "--mask", tmp_path / "m5.npy")
    assert_refused(tmp_path, wrong, str(damaged))
    assert "block 5:1" in wrong.stderr and "counts" in wrong.stderr, wrong.stderr
    told = cli(*args, "--mask", tmp_path / "m5.npy", "--no-mask-check")
    assert told.returncode == 0, told.stderr
    assert "(switched off (--no-mask-check))" in told.stdout
    manifest = json.loads((tmp_path / "out" / "store" / "manifest.json").read_text())
    assert manifest["mask_check"] == [{"checked": False, "why": "switched off (--no-mask-check)"}]
    right = cli(*args, "--mask", tmp_path / "m3.npy", "--force")
    assert right.returncode == 0, right.stderr
    assert "mask checked against the counts of 1 of 1 damaged inputs" in right.stdout
    manifest = json.loads((tmp_path / "out" / "store" / "manifest.json").read_text())
    assert manifest["mask_check"][0]["checked"] is True
