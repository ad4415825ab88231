"""`detect` and `check_mask` on simulated scans: the simulator removes the LORs through dead
crystals in its projector (LOR-level ground truth, independent of the mask code)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from badblock.config import load_config
from badblock.errors import BadInputError
from badblock.io import read_scan, write_scan
from badblock.physics.detect import check_mask, detect
from badblock.physics.footprint import block_footprint, crystal_footprint
from badblock.physics.geometry import transaxial_pairs
from badblock.physics.mask import dead_block_mask
from badblock.physics.scanners import PRESETS, get_scanner
from badblock.physics.simulate import simulate

ROOT = Path(__file__).resolve().parents[2]
DEMO_COUNTS = load_config("demo", [], env={}).simulate.counts


def damaged(tmp_path, blocks=(), crystals=(), counts=DEMO_COUNTS, seed=0) -> np.ndarray:
    """One simulated mini scan with these dead blocks/crystals: its prompts [T, P, V, B]."""
    cfg = load_config(None, ["simulate.scans=1", f"simulate.counts={counts!r}",
                             f"simulate.seed={seed}",
                             "simulate.dead_blocks=" + json.dumps(list(blocks)),
                             "simulate.dead_crystals=" + json.dumps(list(crystals))], env={})
    out = simulate(cfg, tmp_path / f"sim{seed}")
    sub = out / "damaged" if (blocks or crystals) else out
    return np.asarray(read_scan(sub / "scan_000.hs").data)


def test_footprints_count_the_lors_of_every_candidate():
    # against the first-principles LOR enumeration of the mask tests (no shared code)
    from tests.physics.test_mask import brute_force

    sc = get_scanner("mini")
    for fp, cand, blocks, crystals in ((block_footprint(sc), (1, 3), [(3, 1)], []),
                                       (crystal_footprint(sc), (5, 20), [], [(20, 5)])):
        a, t = cand
        g = (np.outer(fp.a1[:, a], fp.t1[:, t].toarray().ravel())
             + np.outer(fp.a2[:, a], fp.t2[:, t].toarray().ravel())).reshape(sc.shape[1:])
        frac, total = brute_force(sc, blocks, crystals)
        np.testing.assert_allclose(g, frac * total, atol=1e-9)
        z = np.random.default_rng(0).random(sc.shape[1:])
        np.testing.assert_allclose(fp.sums(z, chunk=7)[a, t], (g * z).sum())
        np.testing.assert_allclose(fp.sums(z, squared=True)[a, t], (g * g * z).sum())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_no_lor_has_both_ends_in_one_block(name):
    # what lets a block's footprint add its crystals' (footprint.py relies on it)
    sc = PRESETS[name]
    det1, det2, valid = transaxial_pairs(sc)
    assert not (valid & (det1 // sc.block_pitch == det2 // sc.block_pitch)).any()


def pairs(names):
    return sorted(tuple(int(x) for x in n.split(":")) for n in names)


@pytest.mark.parametrize("blocks, seed", [
    ([], 11),
    (["3:1"], 12),
    (["3:1", "4:1"], 13),  # transaxial neighbours
    (["6:0", "6:1"], 14),  # axial neighbours
    (["0:0", "7:1", "12:2"], 15),
    (["15:2", "0:2", "1:2"], 16),  # three in a row across the seam of the ring
])
@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_finds_exactly_the_dead_blocks(tmp_path, blocks, seed, scale):
    det = detect(damaged(tmp_path, blocks, counts=DEMO_COUNTS * scale, seed=seed), "mini",
                 crystals=False)
    assert sorted(det.blocks) == pairs(blocks)
    assert det.crystals == [] and det.undecided_crystals is None
    assert det.undecided_blocks == []  # every block decidable at these counts
    for v in det.verdicts:
        assert v.theta > 0.5 and v.full_counts == 0 and v.info >= 100
    np.testing.assert_array_equal(det.mask(), dead_block_mask("mini", det.blocks))


def test_finds_single_dead_crystals_and_a_block(tmp_path):
    data = damaged(tmp_path, ["9:0"], ["20:5", "100:2", "131:10"], seed=21)
    det = detect(data, "mini")
    assert det.blocks == [(9, 0)]
    assert sorted(det.crystals) == [(20, 5), (100, 2), (131, 10)]
    assert det.undecided_crystals == []


def test_no_false_crystals_on_a_clean_scan(tmp_path):
    det = detect(damaged(tmp_path, seed=22), "mini")
    assert det.blocks == [] and det.crystals == []


def test_low_counts_say_cannot_decide_instead_of_guessing(tmp_path):
    # 2000 counts in 131 328 bins: a block's LORs expect a few counts, not enough to tell
    data = damaged(tmp_path, ["3:1"], counts=2000.0, seed=23)
    det = detect(data, "mini")
    assert det.blocks == [] and det.crystals == []
    assert len(det.undecided_blocks) == 48
    assert len(det.undecided_crystals) == 12 * 128  # every real crystal
    assert det.summary()["undecided_blocks"][0] == "0:0"
    # at 0.1x the blocks are decided but single crystals mostly are not
    low = detect(damaged(tmp_path, ["3:1"], ["20:5"], counts=DEMO_COUNTS / 10, seed=24),
                 "mini")
    assert low.blocks == [(3, 1)] and set(low.crystals) <= {(20, 5)}
    assert (20, 5) in low.crystals + low.undecided_crystals  # found or "cannot decide"
    assert len(low.undecided_crystals) > 0.5 * 12 * 128


def test_detect_refuses_bad_data():
    with pytest.raises(BadInputError, match="negative"):
        detect(-np.ones((3, 57, 36, 64), np.float32), "mini")
    with pytest.raises(BadInputError, match="vision"):
        detect(np.zeros((3, 57, 36, 64), np.uint16), "vision")
    bad = np.zeros((3, 57, 36, 64), np.float32)
    bad[1, 40, 3, 3] = np.nan
    with pytest.raises(BadInputError, match="non-finite"):
        detect(bad, "mini")


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_check_mask_accepts_the_right_mask(tmp_path, scale):
    data = damaged(tmp_path, ["3:1", "4:1"], counts=DEMO_COUNTS * scale, seed=31)
    report = check_mask(data, dead_block_mask("mini", "3:1,4:1"), "mini")
    assert report["counts_in_fully_dead_bins"] == 0 and report["thinning_decided"]
    assert 0.7 < report["theta"] < 1.3 and report["undecided_blocks"] == []
    clean = damaged(tmp_path, counts=DEMO_COUNTS * scale, seed=32)
    assert check_mask(clean, np.zeros((57, 36, 64), np.float32), "mini")["theta"] is None


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_check_mask_refuses_the_wrong_block(tmp_path, scale):
    data = damaged(tmp_path, ["3:1"], counts=DEMO_COUNTS * scale, seed=33)
    with pytest.raises(BadInputError) as err:
        check_mask(data, dead_block_mask("mini", "5:1"), "mini")
    msg = str(err.value)
    assert "block 5:1" in msg and "counts" in msg and "\n" not in msg
    counts = data.sum(axis=0)
    full = dead_block_mask("mini", "5:1") >= 1
    assert f"hold {counts[full].sum():.0f} counts" in msg  # the counts found, exactly
    # a mask that declares nothing for a damaged scan: the undeclared block is named
    with pytest.raises(BadInputError, match="dead block 3:1 the mask does not declare"):
        check_mask(data, np.zeros((57, 36, 64), np.float32), "mini")
    # alive crystals declared beside the right block: the right block dominates the mask's
    # thinning, so only the declared list tells them apart
    wrong = dead_block_mask("mini", "3:1", "40:5,80:7")
    if scale == 1.0:
        with pytest.raises(BadInputError, match="declared dead crystal 40:5 is alive"):
            check_mask(data, wrong, "mini", blocks=[(3, 1)], crystals=[(40, 5), (80, 7)])
    else:  # a crystal's LORs see too few counts at 0.1x to call it alive: no verdict
        report = check_mask(data, wrong, "mini", blocks=[(3, 1)], crystals=[(40, 5), (80, 7)])
        assert [d["info"] < 100 for d in report["declared"]] == [False, True, True]
    report = check_mask(data, dead_block_mask("mini", "3:1"), "mini", blocks=[(3, 1)])
    assert report["declared"][0]["index"] == "3:1"
    with pytest.raises(BadInputError, match="not the one of the declared"):
        check_mask(data, wrong, "mini", blocks=[(3, 1)])


def test_check_mask_shape_mismatch():
    with pytest.raises(BadInputError, match="does not match"):
        check_mask(np.zeros((3, 57, 36, 64)), np.zeros((57, 36, 60)), "mini")


def _cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BADBLOCK_")}
    env.update(BADBLOCK_PROGRESS="0", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "badblock", "detect", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_cli_writes_mask_figure_and_summary(tmp_path):
    data = damaged(tmp_path, ["3:1", "3:2"], ["100:2"], seed=41)
    scan = write_scan(tmp_path / "frame.s.hdr", data)  # e7, as a scanner writes it
    out = tmp_path / "det"
    res = _cli(str(scan), "-o", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "dead blocks: 3:1, 3:2" in res.stdout and "dead crystals: 100:2" in res.stdout
    mask = np.load(out / "frame.mask.npy", allow_pickle=False)
    np.testing.assert_array_equal(mask, dead_block_mask("mini", "3:1,3:2", "100:2"))
    assert (out / "frame.detect.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "detect.json").read_text())["scans"][0]
    assert summary["dead_blocks"] == ["3:1", "3:2"] and summary["dead_crystals"] == ["100:2"]
    assert (out / "config.resolved.yaml").is_file()
    res = _cli(str(scan), "-o", str(out), cwd=tmp_path)
    assert res.returncode == 2 and "already exists" in res.stderr
    res = _cli(str(scan), "-o", str(out), "--force", "--json", "--no-crystals", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["scans"][0]["dead_crystals"] == []


def test_cli_bad_scans_one_line(tmp_path):
    hdr = tmp_path / "big.s.hdr"
    hdr.write_text("!INTERFILE :=\n%SMS-MI header name space := sinogram subheader\n"
                   "!name of data file := big.s\nnumber format := unsigned integer\n"
                   "!number of bytes per pixel := 4\nmatrix size [1] := " + str(2**62) +
                   "\nmatrix size [2] := 3\nmatrix size [3] := 2\nEND OF INTERFILE :=\n")
    (tmp_path / "big.s").write_bytes(bytes(96))
    res = _cli(str(hdr), "-o", str(tmp_path / "o"), cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"needs {2**62 * 3 * 2 * 4} bytes" in res.stderr
    assert not (tmp_path / "o").exists()
    flat = write_scan(tmp_path / "neg.s", -np.ones((3, 57, 36, 64), np.float32))
    res = _cli(str(flat), "--scanner", "mini", "-o", str(tmp_path / "o"), cwd=tmp_path)
    assert res.returncode == 2 and "negative" in res.stderr and not (tmp_path / "o").exists()
