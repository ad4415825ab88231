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
    _check_against_the_files(out, metrics)


def _check_against_the_files(out, metrics):
    """What the numbers say, recomputed from the demo's files with plain numpy: the damaged
    scans are the complete ones thinned only where the mask says, the NRMSE of no correction,
    of dividing by the surviving fraction and of the network match, the network kept every
    spared bin, and the classical fills beat no correction by far (interp ~0.27, normconv ~0.08
    against ~0.78 for none on the demo)."""
    import numpy as np

    from badblock.io import read_scan

    def load(path):
        return np.asarray(read_scan(path).data, dtype=np.float64)

    f = np.load(out / "test" / "mask.npy").astype(np.float64)
    for name in metrics["scans"]:
        complete = out / "sim" / "test" / f"{name}.hs"
        truth = load(complete.with_name(f"{name}.truth.hs"))
        measured = load(complete)
        damaged = load(out / "test" / "damaged" / f"{name}.hs")
        net = load(out / "test" / "repaired" / f"{name}.hs")
        sel = np.broadcast_to(f > 0, truth.shape)
        assert np.array_equal(damaged[~sel], measured[~sel]) and (damaged <= measured).all()
        assert damaged[np.broadcast_to(f >= 1, truth.shape)].max() == 0
        assert np.array_equal(net[~sel], damaged[~sel])
        keep = np.broadcast_to(1.0 - f, truth.shape)
        divided = np.where(keep > 1e-6, damaged / np.where(keep > 1e-6, keep, 1.0), 0.0)
        scores = metrics["per_scan"][name]
        for method, x in (("none", damaged), ("divide", divided), ("unet", net)):
            want = np.sqrt(((x[sel] - truth[sel]) ** 2).sum() / (truth[sel] ** 2).sum())
            assert np.isclose(scores[method]["truth"]["nrmse"], want, rtol=1e-5), method
    mean = metrics["mean"]
    for method in ("interp", "normconv"):
        assert mean[method]["truth"]["nrmse"] < 0.6 * mean["none"]["truth"]["nrmse"], method


def test_demo_refuses_a_non_empty_output(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    proc = subprocess.run([sys.executable, "-m", "badblock", "demo", "--fast", "-o",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "not empty" in proc.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"
