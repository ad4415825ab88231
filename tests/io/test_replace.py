"""Replacing a scan (--force): killed with SIGKILL after any step, a header is never left over
data it does not describe, and the next run's clean-up removes what the killed one left."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from badblock.io import output_paths, read_scan, write_scan
from badblock.utils import atomic

NAMES = {"flat": "scan.raw", "interfile": "scan.hs", "e7": "scan.s.hdr"}
OLD = np.arange(2 * 5 * 6 * 7, dtype=np.float32).reshape(2, 5, 6, 7) / 4
NEW = (np.arange(3 * 4 * 6 * 7, dtype=np.uint16) % 1000).reshape(3, 4, 6, 7)

# The child replaces the scan with NEW and kills itself with SIGKILL right after its k-th
# file-system step (os.replace or os.unlink); a k past the last step lets it finish.
CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from badblock.io import write_scan
    path, fmt, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    new = (np.arange(3 * 4 * 6 * 7, dtype=np.uint16) % 1000).reshape(3, 4, 6, 7)
    steps = [0]
    def killing(fn):
        def call(*a, **kw):
            out = fn(*a, **kw)
            steps[0] += 1
            if steps[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        return call
    os.replace, os.unlink = killing(os.replace), killing(os.unlink)
    write_scan(path, new, format=fmt, force=True)
""")


def _check_pair(header_path, data_path) -> str:
    """'none' (no header: no scan), 'old' or 'new'; fails on a mismatched pair."""
    if not header_path.exists():
        return "none"
    scan = read_scan(header_path if header_path.suffix != ".json" else data_path)
    data = np.asarray(scan.data)
    if data.shape == OLD.shape and data.dtype == OLD.dtype and np.array_equal(data, OLD):
        return "old"
    assert data.shape == NEW.shape and np.array_equal(data, NEW), "header over foreign data"
    return "new"


@pytest.mark.parametrize("fmt", ["interfile", "flat", "e7"])
def test_kill_at_every_step_of_a_replacement(tmp_path, fmt):
    path = tmp_path / NAMES[fmt]
    header_path, data_path = output_paths(path, fmt)
    seen = []
    for k in range(1, 10):
        write_scan(path, OLD, format=fmt, force=True)
        assert _check_pair(header_path, data_path) == "old"
        res = subprocess.run([sys.executable, "-c", CHILD, str(path), fmt, str(k)],
                             capture_output=True, text=True, timeout=120)
        state = _check_pair(header_path, data_path)
        seen.append(state)
        atomic.clean_orphans(tmp_path)
        names = {p.name for p in tmp_path.iterdir()}
        assert names <= {header_path.name, data_path.name}, names  # temporaries all gone
        if res.returncode == 0:
            assert state == "new"
            break
        assert res.returncode == -9, res.stderr
    else:
        pytest.fail("the replacement never finished")
    assert "none" in seen  # a kill between the steps was really tried

