"""badblock repair as a user runs it, with a real checkpoint: outputs, summary, refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

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
