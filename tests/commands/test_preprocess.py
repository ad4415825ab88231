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
