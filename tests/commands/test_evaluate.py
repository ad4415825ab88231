"""badblock evaluate as a user runs it: the checkpoint's repairs scored beside the baselines."""

from __future__ import annotations

import json
import subprocess
import sys


def test_cli_evaluate_runs_the_checkpoint(tmp_path, checkpoint):
    from tests.test_evaluate import write_sim

    path, _, _ = write_sim(tmp_path, "scan_000", 0)
    out = tmp_path / "ev"
    res = subprocess.run([sys.executable, "-m", "badblock", "evaluate", str(path), "--scanner",
                          "mini", "--dead-blocks", "3:1", "--checkpoint", str(checkpoint),
                          "--baselines", "none,interp", "--no-fbp", "--set", "run.threads=1",
                          "--set", "run.device=cpu", "-o", str(out)],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["methods"] == ["none", "interp", "unet"]
    assert metrics["inputs"]["repaired"]["unet"] == [str(out / "repaired" / "scan_000.hs")]
    assert (out / "damaged" / "scan_000.hs").exists()
    assert "unet" in res.stdout
