"""Repair's self-check: correction weights estimated from the scan's own counts, checked against
weights and errors known by construction (a "network" made from the truth), then end to end
through repair_scan with a real network."""

from __future__ import annotations

import types

import numpy as np
import pytest

from badblock.data.corruption import thin
from badblock.inference.selfcheck import rotations, self_check
from badblock.physics import dead_block_mask, get_scanner
from badblock.physics.mask import real_lor_count

SCANNER = get_scanner("mini")
BLOCKS = [(5, 0), (5, 1)]


def _fake(truth: np.ndarray, gain_partial: float, gain_dead: float):
    """A residual "network" on a biased prior ``p = 0.8 truth``: its correction is
    ``gain x (truth - p)``, so the best weight is ``1 / gain`` (clipped to [0, 1]) and the
    prior's NRMSE on every bin is 0.2, by construction."""
    pred = types.SimpleNamespace(layout=types.SimpleNamespace(prior_channel=1),
                                 mask_channel=True, data={"scanner": "mini"},
                                 partial_weight=1.0, dead_weight=1.0)

    def predict(data, m, who, fill, out):
        assert fill is None
        p = 0.8 * truth
        dead = np.broadcast_to(m >= 1 - 1e-6, truth.shape)
        d = np.where(dead, gain_dead, gain_partial) * (truth - p)
        w = np.where(dead, who.dead_weight, who.partial_weight)
        hit = np.broadcast_to(m > 0, truth.shape)
        out[hit] = (p + w * d)[hit]

    return pred, predict


def _counts(level: float = 300.0):
    rng = np.random.default_rng(3)
    lors = real_lor_count(SCANNER)[None].astype(np.float64)
    truth = rng.uniform(0.5, 1.5, size=SCANNER.shape) * level * (lors > 0)
    mask = dead_block_mask(SCANNER, BLOCKS)
    measured = rng.poisson(truth)
    return truth, mask, thin(measured, 1.0 - mask, rng), measured


@pytest.mark.parametrize("gains, want", [((1.0, 1.0), (1.0, 1.0)), ((2.0, 4.0), (0.5, 0.25)),
                                         ((-1.0, 2.0), (0.0, 0.5))])
def test_weights_are_the_error_minimising_ones(gains, want):
    truth, mask, damaged, _ = _counts()
    pred, predict = _fake(truth.astype(np.float32), *gains)
    got = self_check(damaged, mask, pred, predict, blocks=BLOCKS)
    assert got.ran and len(got.shifts) == 3
    assert got.bins["partial"] > 5000 and got.bins["dead"] > 5000
    # Poisson noise of the held-out counts: about 0.003 on these weights at 300 counts a bin
    assert got.weights["partial"] == pytest.approx(want[0], abs=0.02)
    assert got.weights["dead"] == pytest.approx(want[1], abs=0.02)
    assert pred.partial_weight == 1.0 and pred.dead_weight == 1.0  # the caller's is unchanged
    # the prior is 0.8 x truth everywhere: NRMSE 0.2 against the truth, estimated without it
    for c in ("partial", "dead", "all"):
        assert got.nrmse[c]["prior"] == pytest.approx(0.2, abs=0.01)
    # the weighted rule is never estimated worse than the prior or the network
    n = got.nrmse["all"]
    assert n["used"] <= min(n["prior"], n["network"]) + 1e-6


def test_the_held_out_counts_are_the_only_link_to_the_truth():
    """The same fake network on another noise draw of the same truth gives the same weights
    within the noise; on the truth a network that is the prior (gain 0) leaves weight 1."""
    truth, mask, damaged, measured = _counts(level=30.0)
    pred, predict = _fake(truth.astype(np.float32), 2.0, 2.0)
    a = self_check(damaged, mask, pred, predict, blocks=BLOCKS)
    b = self_check(damaged, mask, pred, predict, blocks=BLOCKS, seed=5)
    assert a.weights != b.weights  # the thinning draws matter, so the test can fail
    for c in ("partial", "dead"):
        assert a.weights[c] == pytest.approx(0.5, abs=0.05)
        assert b.weights[c] == pytest.approx(0.5, abs=0.05)
    pred0, predict0 = _fake(truth.astype(np.float32), 0.0, 0.0)
    assert self_check(damaged, mask, pred0, predict0, blocks=BLOCKS).weights == {
        "partial": 1.0, "dead": 1.0}


def test_rotations_leave_the_real_blocks_and_keep_the_damage():
    moves = rotations(SCANNER, [(5, 1), (6, 1)], [(3, 10)], 3)
    assert [s for s, _, _ in moves] == [4, 8, 12]
    real = dead_block_mask(SCANNER, [(5, 1), (6, 1)], [(3, 10)])
    for s, blocks, crystals in moves:
        assert not {t for t, _ in blocks} & {5, 6}
        assert [a for _, a in blocks] == [1, 1]
        assert crystals == [((3 + s * SCANNER.block_pitch) % SCANNER.crystals_per_ring, 10)]
        moved = dead_block_mask(SCANNER, blocks, crystals)
        # a rotation of the ring: about the same lost share in all (not exactly: a block of
        # the mini is 4.5 of its mashed views, so the bins sample a rotated block otherwise;
        # measured within 2 % over all 16 positions) and the same planes touched
        assert moved.sum() == pytest.approx(real.sum(), rel=0.03)
        np.testing.assert_array_equal(moved.max(axis=(1, 2)) > 0, real.max(axis=(1, 2)) > 0)
    # a pattern over every position has nowhere to go
    assert rotations(SCANNER, [(t, 0) for t in range(SCANNER.blocks_transaxial)], [], 3) == []


@pytest.mark.parametrize("what, why", [("mask file", "not known"), ("float", "whole counts"),
                                        ("plain", "residual")])
def test_it_says_why_it_cannot_run(what, why):
    truth, mask, damaged, _ = _counts()
    pred, predict = _fake(truth.astype(np.float32), 2.0, 2.0)
    blocks = BLOCKS
    if what == "mask file":
        blocks = []
    elif what == "float":
        damaged = damaged.astype(np.float32) + 0.5
    else:
        pred.layout.prior_channel = None
    got = self_check(damaged, mask, pred, predict, blocks=blocks)
    assert not got.ran and why in got.why and why in got.line()
