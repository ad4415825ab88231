"""The benchmark's rows made without a network (bench/quality_cases.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from quality_cases import truth_filled  # noqa: E402


def test_truth_filled_adds_the_expected_lost_counts_on_damaged_bins_only():
    # one TOF bin, one plane, 1 x 4 bins: untouched, half lost, dead, 3/4 lost
    damaged = np.array([[[[7, 3, 0, 2]]]], np.uint16)
    truth = np.array([[[[6.9, 6.2, 4.4, 9.0]]]], np.float32)
    mask = np.array([[[0.0, 0.5, 1.0, 0.75]]], np.float32)
    got = truth_filled(damaged, truth, mask)
    # written out: 7 kept; 3 + 0.5 * 6.2 = 6.1 -> 6; 0 + 4.4 -> 4; 2 + 0.75 * 9 = 8.75 -> 9
    assert got.dtype == np.uint16
    assert got.tolist() == [[[[7, 6, 4, 9]]]]
