"""Peak memory in MiB: the process's own peak covers a touched allocation, children's are seen."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from badblock.utils.memory import peak_children_rss_mb, peak_rss_mb

TOTAL_MIB = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def test_peak_rss_covers_a_touched_allocation_in_mib():
    block = np.ones(400 << 17)  # 400 MiB of float64, every page touched
    assert 350 <= peak_rss_mb() <= TOTAL_MIB  # KiB read as MiB would exceed the machine
    assert block[-1] == 1.0


def test_children_peak_seen_after_they_exit():
    subprocess.run([sys.executable, "-c", "import numpy as np; a = np.ones(300 << 17); "
                    "print(a.sum())"], check=True, capture_output=True)
    assert 250 <= peak_children_rss_mb() <= TOTAL_MIB
