"""bench/preset_sweep.py --tiny runs end to end and writes what docs/training.md reads."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_sweep_scores_the_kept_checkpoint_on_validation(tmp_path):
    out = tmp_path / "sweep.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BADBLOCK_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "preset_sweep.py"), "--tiny",
                           "--only", "lost_f0", "complete", "--work", str(tmp_path / "w"),
                           "--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["variants"]) == {"lost_f0", "complete"}
    for r in res["variants"].values():
        assert r["epochs"] == 1 and r["best_epoch"] == 1
        assert math.isfinite(r["val_truth_nrmse_kept"]) and r["val_truth_nrmse_kept"] > 0
    assert res["variants"]["complete"]["sets"] == ["loss.target=complete"]
