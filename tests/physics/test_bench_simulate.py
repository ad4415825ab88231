"""The simulate benchmark's tiny mode runs to the end and writes every figure (no timings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_benchmark_writes_its_json(tmp_path):
    out = tmp_path / "simulate.json"
    env = {**os.environ, "BADBLOCK_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_simulate.py"), "--tiny",
                          "--out", str(out), "--tmp", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr
    rec = json.loads(out.read_text())
    assert rec["command"].endswith("--tiny")
    big = rec["vision-short"]
    for key in ("exact_projection_s_per_scan", "fast_projection_s_per_scan", "projection_speedup",
                "simulate_fast_s", "simulate_fast_cpu_s"):
        assert big[key] > 0, key
    assert isinstance(big["outside_projector_s"], float)  # a difference of two timings
    assert set(rec["mini"]["simulate_s_per_scan"]) == {"exact", "fast"}
    assert len(rec["runs"]) == 7
