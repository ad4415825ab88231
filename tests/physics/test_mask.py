"""Dead-block masks: exact against brute-force enumeration, the Vision's figures, file handling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from badblock.errors import BadInputError
from badblock.physics.geometry import plane_ring_pairs, transaxial_pairs
from badblock.physics.mask import (
    dead_block_mask,
    load_mask,
    mask_summary,
    parse_blocks,
    parse_crystals,
    real_lor_count,
    resolve_mask,
    sensitivity_map,
)
from badblock.physics.scanners import get_scanner


def _ring_pair_planes(n_rings: int, span: int, mrd: int) -> dict[tuple[int, int], int]:
    """Stored plane of every ring pair (r1, r2), from the span/segment rule alone.

    Segment k holds ring differences r2 - r1 in [span k - span//2, span k + span//2], capped at
    +-mrd (r1: the ring of det1); segments are stored 0, -1, +1, -2, +2, ...; within a segment
    the planes run over the sums r1 + r2 that occur, ascending."""
    half = span // 2
    n_side = 0
    while span * (n_side + 1) - half <= mrd:
        n_side += 1
    order = [0] + [k for j in range(1, n_side + 1) for k in (-j, j)]
    planes, start = {}, 0
    for k in order:
        lo, hi = max(span * k - half, -mrd), min(span * k + half, mrd)
        pairs = [(r1, r2) for r1 in range(n_rings) for r2 in range(n_rings)
                 if lo <= r2 - r1 <= hi]
        sums = sorted({r1 + r2 for r1, r2 in pairs})
        for r1, r2 in pairs:
            planes[(r1, r2)] = start + sums.index(r1 + r2)
        start += len(sums)
    return planes


def brute_force(sc, blocks, crystals=()):
    """Fraction of LORs lost per bin by enumerating every LOR, sharing no code with the
    package: the detector-pair formula (for sub-view c = mash v + m and element e,
    det1 = (c + e//2 - off) mod N, det2 = (c + N/2 - (e+1)//2 + off) mod N, off = bins / 4),
    gap crystals at index = crystals_per_block (mod block pitch), and the ring-pair planes of
    the span rule. Only the preset's plain numbers are taken from ``sc``."""
    pitch = sc.crystals_per_block + sc.gap_crystals
    n_cryst = sc.blocks_transaxial * pitch
    rpitch = sc.rings_per_block + sc.gap_rings
    n_rings = sc.blocks_axial * rpitch - sc.gap_rings
    off = sc.n_bins // 4
    assert sc.mash * sc.n_views == n_cryst // 2  # no sub-view repeats another (not the Vision)
    dead = set(crystals)
    for t, a in blocks:
        dead |= {(t * pitch + i, a * rpitch + j) for i in range(sc.crystals_per_block)
                 for j in range(sc.rings_per_block)}
    planes = _ring_pair_planes(n_rings, sc.span, sc.max_ring_diff)
    n_planes = max(planes.values()) + 1
    lost = np.zeros((n_planes, sc.n_views, sc.n_bins))
    total = np.zeros_like(lost)
    real_ring = [r % rpitch < sc.rings_per_block for r in range(n_rings)]
    for v in range(sc.n_views):
        for m in range(sc.mash):
            c = sc.mash * v + m
            for e in range(sc.n_bins):
                d1 = (c + e // 2 - off) % n_cryst
                d2 = (c + n_cryst // 2 - (e + 1) // 2 + off) % n_cryst
                if d1 % pitch >= sc.crystals_per_block or d2 % pitch >= sc.crystals_per_block:
                    continue
                for (r1, r2), p in planes.items():
                    if real_ring[r1] and real_ring[r2]:
                        total[p, v, e] += 1
                        lost[p, v, e] += (d1, r1) in dead or (d2, r2) in dead
    return np.divide(lost, total, out=np.zeros_like(lost), where=total > 0), total


@pytest.mark.parametrize("blocks, crystals", [
    ([(3, 1)], []),
    ([(3, 1), (4, 1)], []),  # neighbours: one ring class
    ([(0, 0), (9, 2), (15, 1)], []),  # three ring classes
    ([(3, 1)], [(5, 0), (100, 4), (31, 5)]),  # crystals split a block's ring class
    ([], [(16, 11)]),
])
@pytest.mark.parametrize("changes", [{}, {"gap_rings": 1}, {"span": 1, "max_ring_diff": 4},
                                     {"span": 3, "max_ring_diff": 9}])
def test_exact_against_brute_force(blocks, crystals, changes):
    # the mini preset, and with a virtual gap ring between axial blocks (as the mCT has) or
    # other axial compressions
    sc = get_scanner("mini", **changes)
    want, total = brute_force(sc, blocks, crystals)
    got = dead_block_mask(sc, blocks, crystals)
    assert got.dtype == np.float32 and got.shape == sc.shape[1:]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.array_equal(real_lor_count(sc), total)
    assert got.max() <= 1 and got.min() >= 0 and got.max() > 0


def test_gap_bins_are_zero_and_have_no_real_lors():
    sc = get_scanner("mini")
    total = real_lor_count(sc)
    assert (total == 0).any()
    mask = dead_block_mask(sc, [(b, a) for b in range(16) for a in range(3)])
    assert np.array_equal(mask == 1, total > 0)  # all dead: every real bin lost, gaps stay 0
    assert (mask[total == 0] == 0).all()
    assert dead_block_mask(sc, [], [(17, 4)]).max() == 0  # crystal 17 = 8 mod 9: the gap


def test_mct_virtual_rings_hold_no_real_lors():
    # plane 26 of segment 0 sums r1 + r2 = 26, |r2 - r1| <= 5: five pairs, but (13, 13) is the
    # virtual ring between axial blocks 0 and 1
    assert len(plane_ring_pairs(get_scanner("mct"))[26]) == 4
    assert len(plane_ring_pairs(get_scanner("mct"), real_only=False)[26]) == 5
    sc = get_scanner("mct", span=1, max_ring_diff=2)  # segment 0 plane r holds (r, r) only
    total = real_lor_count(sc)
    mask = dead_block_mask(sc, [(0, 0), (0, 1)])
    assert total[12].sum() > 0 and total[13].sum() == 0 and mask[13].max() == 0
    assert mask[12].max() == 1 and mask[14].max() == 1


def test_vision_one_dead_block_matches_spec():
    s = mask_summary(dead_block_mask("vision", "3:1"))
    assert 1.3 < s["percent_bins_affected"] < 1.5
    assert 280 <= s["planes_touched"] <= 300
    assert 7 < s["percent_affected_fully_dead"] < 10
    assert 0.35 <= s["median_loss_affected"] <= 0.45


def test_parse():
    assert parse_blocks("3:1,4:1") == [(3, 1), (4, 1)]
    assert parse_blocks(["3:1", " 4:2 "]) == [(3, 1), (4, 2)]
    assert parse_crystals("100:7") == [(100, 7)]
    assert parse_blocks("") == []
    with pytest.raises(BadInputError, match="base-60"):
        parse_blocks(["181"])  # what YAML makes of an unquoted 3:1
    with pytest.raises(BadInputError, match="'3-1' is not a block"):
        parse_blocks("3-1")
    with pytest.raises(BadInputError, match="outside"):
        dead_block_mask("mini", [], [(144, 0)])


def test_load_mask(tmp_path):
    sc = get_scanner("mini")
    mask = dead_block_mask(sc, "3:1")
    path = tmp_path / "m.npy"
    np.save(path, mask)
    assert np.array_equal(load_mask(path, "mini"), mask)
    np.save(tmp_path / "m4.npy", mask[None])
    assert load_mask(tmp_path / "m4.npy", sc).shape == mask.shape
    with pytest.raises(BadInputError, match="does not match scanner vision"):
        load_mask(path, "vision")
    np.save(tmp_path / "big.npy", mask * 2)
    with pytest.raises(BadInputError, match="within 0..1"):
        load_mask(tmp_path / "big.npy")
    legacy = tmp_path / "mask.pkl"
    legacy.write_bytes(pickle.dumps(mask.astype(np.float64)))
    with pytest.raises(BadInputError, match="allow_pickle"):
        load_mask(legacy, sc)
    assert np.array_equal(load_mask(legacy, sc, allow_pickle=True), mask)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadInputError, match="cannot read"):
        load_mask(tmp_path / "obj.npy")
    with pytest.raises(BadInputError, match="not found"):
        load_mask(tmp_path / "none.npy")


def test_resolve_mask_precedence(tmp_path):
    from badblock.config.common import ScannerConfig

    cfg = ScannerConfig(name="mini", dead_blocks=["3:1"])
    r = resolve_mask(cfg)
    assert np.array_equal(r.mask, dead_block_mask("mini", [(3, 1)]))
    assert (r.path, r.scanner, r.blocks, r.crystals) == (None, "mini", [(3, 1)], [])
    assert r.describe() == "mini dead blocks 3:1"
    # flags beat the section; crystals join in
    r = resolve_mask(cfg, dead_blocks="5:0", dead_crystals="7:2")
    assert np.array_equal(r.mask, dead_block_mask("mini", [(5, 0)], [(7, 2)]))
    assert r.describe(with_scanner=False) == "dead blocks 5:0 crystals 7:2"
    # a mask file (relative: under data_root) beats the dead blocks, --scanner beats the file
    np.save(tmp_path / "m.npy", dead_block_mask("mini", [(9, 2)]))
    filed = ScannerConfig(name="mini", dead_blocks=["3:1"], mask="m.npy")
    r = resolve_mask(filed, data_root=tmp_path)
    assert r.path == tmp_path / "m.npy" and r.describe() == f"mask {tmp_path / 'm.npy'}"
    assert np.array_equal(r.mask, dead_block_mask("mini", [(9, 2)]))
    assert resolve_mask(filed, scanner="mini", data_root=tmp_path).blocks == [(3, 1)]
    assert resolve_mask(cfg, mask_path=tmp_path / "m.npy").path == tmp_path / "m.npy"
    # a fallback (the store's mask) comes after the file and before the dead blocks
    fallback = np.full((57, 36, 64), 0.5, np.float32)
    assert resolve_mask(cfg, fallback=fallback).mask is not None
    assert np.array_equal(resolve_mask(cfg, fallback=fallback).mask, fallback)
    assert resolve_mask(filed, fallback=fallback, data_root=tmp_path).path is not None
    with pytest.raises(BadInputError, match="does not match scanner vision"):
        resolve_mask(ScannerConfig(name="vision", mask="m.npy"), data_root=tmp_path,
                     check_shape=True)
    with pytest.raises(BadInputError, match="no dead blocks"):
        resolve_mask(ScannerConfig(name="mini", dead_blocks=[]))
    with pytest.raises(BadInputError, match="scanner.dead_blocks"):
        resolve_mask(ScannerConfig(name="mini", dead_blocks=["181"]))


def test_load_mask_against_the_scans_shape(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((5, 4, 7), np.float32))
    assert load_mask(tmp_path / "m.npy", shape=(3, 5, 4, 7)).shape == (5, 4, 7)
    with pytest.raises(BadInputError, match=r"the scans' \[plane, view, bin\] \[5, 4, 8\]"):
        load_mask(tmp_path / "m.npy", shape=(1, 5, 4, 8))


def test_sensitivity_map_is_the_real_lor_share_padded_with_the_flipped_wrap():
    from badblock.physics.wrap import radial_flip

    sc = get_scanner("mini")
    _, _, valid = transaxial_pairs(sc)
    share = valid.sum(axis=1) / valid.shape[1]  # [view, bin]
    plain = sensitivity_map(sc)
    assert plain.dtype == np.float32 and plain.shape == (sc.n_views, sc.n_bins)
    np.testing.assert_allclose(plain, share, rtol=1e-6)
    # the share times the ring pairs of a plane is the real LOR count of that plane's bins
    np.testing.assert_allclose(plain * valid.shape[1] * len(plane_ring_pairs(sc)[0]),
                               real_lor_count(sc)[0], rtol=1e-6)
    padded = sensitivity_map("mini", 40)  # 36 views -> 2 before, 2 after
    np.testing.assert_array_equal(padded[2:38], plain)
    np.testing.assert_array_equal(padded[38], radial_flip(plain[0]))
    np.testing.assert_array_equal(padded[1], radial_flip(plain[35]))
