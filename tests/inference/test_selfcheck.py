"""Repair's self-check: correction weights estimated from the scan's own counts, checked against
weights and errors known by construction (a "network" made from the truth), then end to end
through repair_scan with a real network."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

from badblock.data.corruption import thin
from badblock.inference.selfcheck import rotations, self_check, thin_virtual
from badblock.physics import dead_block_mask, get_scanner
from badblock.physics.mask import real_lor_count
from tests.inference.test_engine import PEAK_SAMPLER

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


def test_the_standard_error_is_the_spread_of_the_estimate_over_scans():
    """Over independent scans of one truth (new Poisson counts, new damage draws, new thinning
    seeds) the estimate scatters by about its standard error: se = sqrt(sum d^2 r / f) /
    sum d^2 takes the held-out counts' variance lam / f and leaves out the covariance of a bin
    scored in several rotations, so the spread may run somewhat above it)."""
    rng = np.random.default_rng(3)
    lors = real_lor_count(SCANNER)[None].astype(np.float64)
    truth = rng.uniform(0.5, 1.5, size=SCANNER.shape) * 2.0 * (lors > 0)  # 2 counts a bin
    mask = dead_block_mask(SCANNER, BLOCKS)
    pred, predict = _fake(truth.astype(np.float32), 2.0, 4.0)
    est, se = [], []
    for k in range(30):
        draw = np.random.default_rng(100 + k)
        damaged = thin(draw.poisson(truth), 1.0 - mask, draw)
        got = self_check(damaged, mask, pred, predict, blocks=BLOCKS, seed=k)
        est.append([got.estimate[c] for c in ("partial", "dead")])
        se.append([got.se[c] for c in ("partial", "dead")])
    est, se = np.array(est), np.array(se)
    assert est.mean(0) == pytest.approx([0.5, 0.25], abs=0.02)
    assert np.all(se > 0) and np.ptp(se, axis=0).max() < 0.5 * se.mean(0).min()
    ratio = est.std(0, ddof=1) / se.mean(0)
    assert np.all((ratio > 0.75) & (ratio < 1.5)), ratio


@pytest.mark.parametrize("z", [1.0, 3.0])
def test_the_weight_is_the_estimate_lowered_by_z_standard_errors(z):
    truth, mask, damaged, _ = _counts(level=3.0)
    pred, predict = _fake(truth.astype(np.float32), 2.0, 2.0)
    plain = self_check(damaged, mask, pred, predict, blocks=BLOCKS, z=0.0)
    low = self_check(damaged, mask, pred, predict, blocks=BLOCKS, z=z)
    assert low.estimate == plain.estimate and low.se == plain.se and low.z == z
    for c in ("partial", "dead"):
        assert plain.weights[c] == round(min(max(plain.estimate[c], 0.0), 1.0), 4)
        want = min(max(plain.estimate[c] - z * plain.se[c], 0.0), 1.0)
        assert low.weights[c] == round(want, 4) and low.weights[c] < plain.weights[c]
    assert low.summary()["z"] == z and low.summary()["se"] == low.se


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


def test_the_thinning_in_chunks_draws_what_one_whole_scan_draw_does():
    """Chunks of 5 planes walked in C order: the same counts as one ``thin`` of the whole scan
    with the survival written out here, so streaming changed no repair's bytes."""
    truth, mask, damaged, _ = _counts(level=20.0)
    both = dead_block_mask(SCANNER, BLOCKS + [(9, 1)])
    survive = np.where(mask < 1, (1 - both) / np.maximum(1 - mask, 1e-12), 0.0)
    want = thin(damaged, np.clip(survive, 0, 1)[None], np.random.default_rng([7, 2]))
    got = np.zeros_like(damaged)
    thin_virtual(damaged, mask, both, np.random.default_rng([7, 2]), got,
                 chunk_bytes=5 * 36 * 64 * 8)
    np.testing.assert_array_equal(got, want)
    assert (got < damaged).any()  # the virtual damage took counts


def test_its_scratch_files_are_gone_when_it_returns(tmp_path):
    truth, mask, damaged, _ = _counts()
    pred, predict = _fake(truth.astype(np.float32), 2.0, 2.0)
    seen = []

    def watching(data, m, who, fill, out):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        predict(data, m, who, fill, out)

    assert self_check(damaged, mask, pred, watching, blocks=BLOCKS, scratch=tmp_path).ran
    # unlinked as soon as mapped: nothing to see even while it runs, nothing left after
    assert seen and all(s == [] for s in seen) and list(tmp_path.iterdir()) == []


SELF_CHECK_MEMORY = PEAK_SAMPLER + textwrap.dedent("""
    import json, sys, types
    import numpy as np
    from pathlib import Path
    import badblock.inference.engine  # torch and the engine loaded before the baseline
    from badblock.io import ScanHeader, read_scan, write_scan
    from badblock.physics import dead_block_mask
    from badblock.repair import repair_scan

    class Residual:  # divide, dressed as a residual network of the Vision with the mask channel
        context, mask_channel, multiple, views_to = 1, True, 1, 0
        layout = types.SimpleNamespace(prior_channel=1, fill_prior=False)
        data = {"scanner": "vision"}
        partial_weight = dead_weight = 1.0
        def __call__(self, stacks, masks):
            return stacks[:, 1] / np.maximum(1 - masks[:, 1], 0.1) * (1 + 0.1 * self.dead_weight)

    tmp, n_tof, check = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "on"
    shape = (n_tof, 815, 50, 520)  # a Vision frame with fewer TOF bins: 40 MiB of uint16 each
    block = np.random.default_rng(0).integers(0, 9, size=(1, 163, 50, 520), dtype=np.uint16)
    header = ScanHeader(format="flat", shape=shape, dtype=np.dtype("<u2"),
                        data_file=tmp / "big.raw", segments=None, tof_order="linear")
    scan = read_scan(write_scan(tmp / "big.raw", np.tile(block, (n_tof, 5, 1, 1)), header))
    blocks = [(3, 1)]
    mask = dead_block_mask("vision", blocks)
    # anonymous shared maps (Pss_Shmem) count too: an in-memory copy could hide there
    s, growth = peak_growth(lambda: repair_scan(scan, mask, Residual(), tmp / "out.raw",
                                                batch_size=16, workers=2, self_check=check,
                                                damage=(blocks, [])),
                            ("Pss_Anon:", "Pss_Shmem:"))
    print(json.dumps({"growth_mb": growth, "ran": s["self_check"]["ran"],
                      "left": sorted(p.name for p in tmp.iterdir()),
                      "scan_mb": scan.header.nbytes / 2**20}))
""")


def _resident_growth(tmp_path, n_tof: int, check: str) -> dict:
    folder = tmp_path / f"{n_tof}_{check}"
    folder.mkdir()
    res = subprocess.run([sys.executable, "-c", SELF_CHECK_MEMORY, str(folder), str(n_tof),
                          check], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["ran"] == (check == "on")
    assert not [n for n in r["left"] if n.startswith(".")], r["left"]  # no scratch left
    return r


def test_its_memory_grows_with_the_mask_not_with_the_scan(tmp_path):
    # tripling the TOF bins triples the scan (40 -> 121 MiB) and the float32 repairs the check
    # makes of it (81 -> 243 MiB each, 3 rotations x 2), not the mask (81 MiB of float32):
    # held in memory (9df70f6) the peak went from 1.1 to 2.6 GB; in files under the output's
    # folder what the check adds (a rotation's mask, the thinning's chunks, one TOF bin's
    # scored bins) is the same for both: 210 MB, 42 MB without the check
    small = _resident_growth(tmp_path, 1, "on")
    large = _resident_growth(tmp_path, 3, "on")
    off = _resident_growth(tmp_path, 3, "off")
    assert large["scan_mb"] == 3 * small["scan_mb"]
    assert large["growth_mb"] - small["growth_mb"] < 40, (small, large)
    assert large["growth_mb"] - off["growth_mb"] < 3 * 81, (off, large)
