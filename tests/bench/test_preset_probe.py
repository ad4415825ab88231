"""The probe's self-check bookkeeping on hand-made arrays and records: the truth's weight, the
suite-sized cells and the z rule."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import preset_probe as pp  # noqa: E402


def test_truth_weight_is_the_minimiser_of_the_rules_error():
    rng = np.random.default_rng(3)
    mask = np.zeros((4, 6, 8), np.float32)
    mask[1, :, 2:4] = 1.0  # fully dead
    mask[2, :, 5:7] = 0.5  # partly damaged
    truth = rng.uniform(5, 10, (2, 4, 6, 8))
    fill = truth + rng.normal(0, 1, truth.shape)
    own = truth + rng.normal(0, 0.5, truth.shape)  # the network nearer the truth
    w = pp.truth_weights(own, fill, truth, mask)
    # independently: the error of p + w d on each class over a fine grid of w
    grid = np.linspace(-1, 2, 30001)
    for c, sel in (("dead", mask >= 1.0), ("partial", (mask > 0) & (mask < 1.0))):
        p, d, t = fill[:, sel], own[:, sel] - fill[:, sel], truth[:, sel]
        err = [((p + g * d - t) ** 2).sum() for g in grid[::100]]
        coarse = grid[::100][int(np.argmin(err))]
        assert w[c] == pytest.approx(coarse, abs=0.011)
        assert 0.5 < w[c] < 1.5
    # no correction on a class: weight 1 (the network's own, nothing to weigh)
    assert pp.truth_weights(fill, fill, truth, mask) == {"partial": 1.0, "dead": 1.0}


def test_cells_are_pairs_of_one_familys_scans():
    assert pp._cells(16) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13],
                             [14, 15]]
    assert pp._cells(12) == [[0, 1], [2], [3, 4], [5], [6, 7], [8], [9, 10], [11]]
    assert pp._cells(4) == [[0], [1], [2], [3]]


def _record(name: str, mine: list[tuple[float, float]], fill: list[tuple[float, float]],
            epoch: int = 5) -> dict:
    row = lambda xs: [{"partial": a, "dead": b} for a, b in xs]  # noqa: E731
    return {"datasets": {"0": {"kept_epoch": epoch, "scores": {"demo/single": {
        "model": {"scan_classes": row(fill)}, name: {"scan_classes": row(mine)}}}}}}


def test_z_rule_takes_the_lowest_ratio_of_those_worse_nowhere():
    fill = [(1.0, 1.0)] * 8  # 2 scans a family: one pair per family
    # z0: one pair worse on dead bins (mean 1.01 > 1); z1_dead2: worse nowhere; deadfill too
    z0 = [(0.8, 0.98)] * 6 + [(0.8, 1.03), (0.8, 0.99)]
    d2 = [(0.8, 0.995)] * 8
    df = [(0.8, 1.0)] * 8
    recs = {"mixed96_selfcheck": _record("mixed96_selfcheck", z0, fill),
            "mixed96_selfcheck_z1_dead2": _record("mixed96_selfcheck_z1_dead2", d2, fill),
            "mixed96_selfcheck_z1_deadfill": _record("mixed96_selfcheck_z1_deadfill", df, fill)}
    ratios = {"mixed96_selfcheck": 0.85, "mixed96_selfcheck_z1_dead2": 0.87,
              "mixed96_selfcheck_z1_deadfill": 0.88}
    got = pp.choose_z(recs, "mixed96", ratios)
    assert got["variants"]["mixed96_selfcheck"]["worse"]["dead"] == {
        "d0/vessels/demo/single/3": pytest.approx(1.01)}
    assert got["variants"]["mixed96_selfcheck"]["cells"] == 4
    assert got["choice"] == "mixed96_selfcheck_z1_dead2" and got["meets"]
    assert got["z"] == 1.0 and got["z_dead"] == 2.0
    assert got["variants"]["mixed96_selfcheck_z1_deadfill"]["z_dead"] == "fill"
    # none worse nowhere: the fewest cells worse
    recs.pop("mixed96_selfcheck_z1_dead2")
    recs.pop("mixed96_selfcheck_z1_deadfill")
    got = pp.choose_z(recs, "mixed96", ratios)
    assert got["choice"] == "mixed96_selfcheck" and not got["meets"]
    # other trainings: no choice
    recs["mixed96_selfcheck_z1_dead3"] = _record("mixed96_selfcheck_z1_dead3", d2, fill, epoch=6)
    assert pp.choose_z(recs, "mixed96", ratios)["choice"] is None


def test_dead_variants_lower_only_the_dead_class():
    check = {"weights": {"partial": 0.9, "dead": 0.5},
             "estimate": {"partial": 0.95, "dead": 0.6}, "se": {"partial": 0.05, "dead": 0.1}}
    assert pp._lowered(check, 1.0, 3.0) == {"partial": 0.9, "dead": 0.3}
    assert pp._lowered(check, 1.0, math.inf) == {"partial": 0.9, "dead": 0.0}
    assert pp._lowered(check, 2.0) == {"partial": 0.85, "dead": 0.4}
    v = pp.VARIANTS["mixed96_selfcheck_z2_deadfill"]
    assert (v.z, v.z_dead, v.network, v.self_check) == (2.0, math.inf, "mixed96", True)
