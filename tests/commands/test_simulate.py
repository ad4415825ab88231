"""badblock simulate as a user runs it: flags, and bad activity files in one line with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.physics.test_simulate import ROOT


def run_cli(*args, cwd):
    env = {**os.environ, "BADBLOCK_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "badblock", "simulate", *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.mark.parametrize("array, problem", [
    (np.ones((4, 4)), "3-D"),
    (np.full((3, 4, 4), np.inf), "infinite"),
    (-np.ones((3, 4, 4)), "non-negative"),
])
def test_cli_bad_activity_fails_in_one_line_with_exit_2(tmp_path, array, problem):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    res = run_cli("--activity", str(path), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and problem in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_runs_with_flags(tmp_path):
    res = run_cli("--scans", "1", "--counts", "20000", "--seed", "4", "--scanner", "mini",
                  "--set", "simulate.step_mm=9", "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    record = json.loads((tmp_path / "out" / "simulation.json").read_text())
    assert record["seed"] == 4 and record["counts"] == 20000
    assert "simulated 1 mini scan" in res.stdout


def test_cli_writes_into_a_mount_point(tmp_path, bind_mount):
    """-o naming a mount point (docker -v host:/output): renaming it is EBUSY, which was a
    traceback; now the scans land inside it, and a second run without --force is one line."""
    out = bind_mount()
    args = ("--scans", "1", "--counts", "20000", "--scanner", "mini", "--set",
            "simulate.step_mm=9", "-o", str(out))
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in out.iterdir())
    assert "simulation.json" in names and not [n for n in names if n.startswith(".")]
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["scanner"] == "mini"
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    assert "already exists" in again.stderr
