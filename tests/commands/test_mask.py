"""badblock mask: writes the mask, its picture, summary and config; refuses to overwrite."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from badblock.physics.mask import dead_block_mask


def _cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "badblock", "mask", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_mask_png_and_summary(tmp_path):
    out = tmp_path / "out" / "mask.npy"
    res = _cli("--scanner", "mini", "--dead-blocks", "3:1,4:1", "--dead-crystals", "5:0",
               "-o", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "bins affected" in res.stdout and "planes touched" in res.stdout
    want = dead_block_mask("mini", [(3, 1), (4, 1)], [(5, 0)])
    assert np.array_equal(np.load(out, allow_pickle=False), want)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert (out.parent / "config.resolved.yaml").is_file()
    # nothing is overwritten without --force; bad input leaves no file behind
    res = _cli("--scanner", "mini", "-o", str(out), cwd=tmp_path)
    assert res.returncode == 2 and "already exists" in res.stderr
    bad = tmp_path / "bad.npy"
    res = _cli("--config", "demo", "--set", "scanner.dead_blocks=[\"40:1\"]", "-o", str(bad),
               cwd=tmp_path)
    assert res.returncode == 2 and "transaxial block 40" in res.stderr
    assert not bad.exists() and not bad.with_suffix(".png").exists()
