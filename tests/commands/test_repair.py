"""badblock repair as a user runs it, with a real checkpoint: outputs, summary, refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from badblock.io import read_scan
from tests.test_repair import _damaged, _write


def test_cli_repair_with_real_checkpoint(tmp_path, checkpoint):
    counts, mask = _damaged(dtype=np.uint16)
    src = _write(tmp_path / "dam.hs", counts, "interfile", "linear")
    out = tmp_path / "fixed"
    base = [sys.executable, "-m", "badblock", "repair", "--checkpoint", str(checkpoint),
            "--scanner", "mini", "--dead-blocks", "3:1", "--set", "run.threads=1",
            "--set", "run.device=cpu"]
    res = subprocess.run(base + [str(src), "-o", str(out)], capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stderr
    assert "clipped" in res.stdout
    rep = read_scan(out / "dam.hs")
    data, orig = np.asarray(rep.data), np.asarray(read_scan(src).data)
    hit = np.broadcast_to(mask > 0, data.shape)
    np.testing.assert_array_equal(data[~hit], orig[~hit])
    assert not np.array_equal(data[hit], orig[hit])
    summary = json.loads((out / "repair_summary.json").read_text())
    assert summary["scans"][0]["planes_repaired"] == int((mask > 0).any(axis=(1, 2)).sum())
    assert (out / "config.resolved.yaml").exists()
    # again without --force: refused, output untouched
    before = (out / "dam.s").read_bytes()
    res = subprocess.run(base + [str(src), "-o", str(out)], capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 2 and "already exists" in res.stderr
    assert (out / "dam.s").read_bytes() == before
    # over its own input, even with --force
    res = subprocess.run(base + ["--force", str(src), "-o", str(src)], capture_output=True,
                         text=True, timeout=180)
    assert res.returncode == 2 and "input scan" in res.stderr
    # a mask of another scanner: one clear line
    np.save(tmp_path / "m.npy", mask[:, :, :-1])
    res = subprocess.run(base[:6] + ["--mask", str(tmp_path / "m.npy"), str(src), "-o",
                                     str(tmp_path / "o3")], capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 2 and "does not match" in res.stderr
    assert res.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def residual_checkpoint(tmp_path_factory):
    """One tiny epoch of a network that corrects the normconv prior (the self-check's kind)."""
    import torch

    from badblock.train.loop import train
    from tests.train.trainer_store import make_store, tiny_config

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("residual_ckpt")
    make_store(root / "store", n_train=1, n_val=1)
    run = train(tiny_config(root, **{
        "train.epochs": 1, "data.mask_channel": True, "data.mask_stack": True,
        "data.normalise": "mean", "model.per_lor": True, "model.prior_widths": [0.7, 1.5, 1.0],
        "model.prior_residual": True, "augment.view_roll": 0.0, "augment.radial_flip": 0.0}))
    return run / "checkpoint_final.pt"


def test_cli_self_check_reports_the_weights_it_repairs_with(tmp_path, residual_checkpoint):
    counts, mask = _damaged(dtype=np.uint16)
    src = _write(tmp_path / "dam.hs", counts, "interfile", "linear")
    base = [sys.executable, "-m", "badblock", "repair", "--checkpoint", str(residual_checkpoint),
            "--set", "run.threads=1", "--set", "run.device=cpu", "--self-check"]
    res = subprocess.run(base + ["--scanner", "mini", "--dead-blocks", "3:1", str(src), "-o",
                                 str(tmp_path / "a")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "self-check on 3 rotated copies of the damage" in res.stdout
    check = json.loads((tmp_path / "a" / "repair_summary.json").read_text())["scans"][0][
        "self_check"]
    assert check["ran"] and check["shifts"] == [4, 8, 12]
    assert all(0.0 <= w <= 1.0 for w in check["weights"].values())
    assert f"fully dead {check['weights']['dead']}" in res.stdout
    # a bare mask file: the dead blocks are unknown, so it cannot run, and says so
    np.save(tmp_path / "m.npy", mask)
    res = subprocess.run(base + ["--mask", str(tmp_path / "m.npy"), str(src), "-o",
                                 str(tmp_path / "b")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "self-check not run" in res.stdout and "--dead-blocks" in res.stdout
    check = json.loads((tmp_path / "b" / "repair_summary.json").read_text())["scans"][0][
        "self_check"]
    assert not check["ran"] and "not known" in check["why"]


def test_no_room_for_the_self_check_is_one_line_and_the_way_out_works(tmp_path,
                                                                        residual_checkpoint,
                                                                        small_disk):
    # the 788 kB output fits on 1200 KiB; the check's copies (788 kB of counts, 1.6 MB of
    # float32 repairs, reserved before they are written) do not
    counts, _ = _damaged(dtype=np.uint16)
    src = _write(tmp_path / "dam.hs", counts, "interfile", "linear")
    disk = small_disk(1200)
    base = [sys.executable, "-m", "badblock", "repair", "--checkpoint", str(residual_checkpoint),
            "--set", "run.threads=1", "--set", "run.device=cpu", "--scanner", "mini",
            "--dead-blocks", "3:1", str(src), "-o", str(disk)]
    res = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert str(disk) in res.stderr and "--no-self-check" in res.stderr, res.stderr
    assert list(disk.iterdir()) == []  # nothing written, no temporary file left
    res = subprocess.run(base + ["--no-self-check"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert read_scan(disk / "dam.hs").data.shape == counts.shape
