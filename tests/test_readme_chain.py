"""The README's seven-command pipeline, run as a user would (subprocesses, real files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def bb(*args, cwd):
    env = dict(os.environ, BADBLOCK_PROGRESS="0", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "badblock", *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"badblock {args[0]} failed:\n{out.stdout}\n{out.stderr}"
    return out


def test_seven_commands(tmp_path):
    bb("simulate", "--config", "demo", "--scans", "4", "-o", "sim", cwd=tmp_path)
    bb("mask", "--scanner", "mini", "--dead-blocks", "5:1", "-o", "mask.npy", cwd=tmp_path)
    bb("preprocess", "--config", "demo", "sim/", "-o", "work", cwd=tmp_path)
    bb("fills", "--config", "demo", "-o", "work", "--draws", "1", cwd=tmp_path)
    bb("train", "--config", "demo", "-o", "work", "--set", "train.epochs=1",
       "--set", "data.epoch_size=32", cwd=tmp_path)
    ck = "work/train/checkpoint_best.pt"
    out = bb("evaluate", "sim/scan_003.hs", "--mask", "mask.npy", "--checkpoint", ck,
             "-o", "report", cwd=tmp_path)
    assert "normconv" in out.stdout and "unet" in out.stdout
    bb("repair", "--checkpoint", ck, "--mask", "mask.npy", "report/damaged/scan_003.hs",
       "-o", "repaired/", cwd=tmp_path)
    assert (tmp_path / "repaired" / "scan_003.hs").is_file()
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    _check_against_the_files(tmp_path, metrics)
    # a second repair into the same place is refused, and the first output is kept
    again = subprocess.run([sys.executable, "-m", "badblock", "repair", "--checkpoint", ck,
                            "--mask", "mask.npy", "report/damaged/scan_003.hs", "-o",
                            "repaired/"], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert (tmp_path / "repaired" / "scan_003.s").stat().st_size > 0


def _check_against_the_files(root, metrics):
    """The scores and the repair, recomputed here from the files with plain numpy: damaged-bin
    NRMSE against the truth of no correction and of the network, and data consistency (every
    bin the mask spares is the damaged input's, in both repairs)."""
    import numpy as np

    from badblock.io import read_scan

    def load(name):
        return np.asarray(read_scan(root / name).data, dtype=np.float64)

    f = np.load(root / "mask.npy")
    truth, damaged = load("sim/scan_003.truth.hs"), load("report/damaged/scan_003.hs")
    net, again = load("report/repaired/scan_003.hs"), load("repaired/scan_003.hs")
    sel = np.broadcast_to(f > 0, truth.shape)
    assert sel.sum() == metrics["damaged_bins"] * truth.shape[0]

    def nrmse(x):
        return np.sqrt(((x[sel] - truth[sel]) ** 2).sum() / (truth[sel] ** 2).sum())

    mean = metrics["mean"]
    assert np.isclose(mean["none"]["truth"]["nrmse"], nrmse(damaged), rtol=1e-6)
    assert np.isclose(mean["unet"]["truth"]["nrmse"], nrmse(net), rtol=1e-6)
    for repaired in (net, again):
        assert np.array_equal(repaired[~sel], damaged[~sel])
        assert (repaired[sel] >= 0).all()
    # the same checkpoint on the same scan: repair gives what evaluate scored
    assert np.array_equal(net, again)
    # the dead bins were filled: no correction leaves them at 0, the network does not
    dead = np.broadcast_to(f >= 1, truth.shape)
    assert damaged[dead].max() == 0 and net[dead].mean() > 0.1 * truth[dead].mean()
