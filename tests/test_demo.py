"""badblock demo --fast: the whole chain as a user runs it, in a subprocess."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

METHODS = ("none", "divide", "interp", "biharmonic", "normconv", "unet")


def test_demo_fast_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "badblock", "demo", "--fast", "-o", str(out),
                           "--set", "run.threads=1", "--set", "train.tensorboard=false"],
                          capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out / "report"
    for name in ("metrics.json", "report.png", "report.md"):
        assert (report / name).is_file(), f"{name} missing"
        assert (report / name).stat().st_size > 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(METHODS) <= set(metrics["mean"]), sorted(metrics["mean"])
    for method in METHODS:
        value = metrics["mean"][method]["truth"]["nrmse"]
        assert math.isfinite(value) and value >= 0, (method, value)
    # the test block was never a training position
    demo = metrics["demo"]
    assert not set(demo["test_blocks"]) & set(demo["train_blocks"])
    table = (report / "report.md").read_text()
    for method in METHODS:
        assert f"\n{method} " in table, f"{method} missing from the report table"
    # the network sees the scanner's sensitivity map: repair used that checkpoint as trained
    assert (out / "train" / "checkpoint_final.pt").is_file()


def test_demo_refuses_a_non_empty_output(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    proc = subprocess.run([sys.executable, "-m", "badblock", "demo", "--fast", "-o",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "not empty" in proc.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"
