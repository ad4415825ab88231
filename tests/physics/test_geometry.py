"""LOR <-> (segment, plane, view, bin): the Vision formula, uniqueness, counts, the inverse."""

from __future__ import annotations

import numpy as np
import pytest

from badblock.physics.geometry import (
    crystal_is_real,
    lor_geometry,
    lor_to_bin,
    plane_ring_pairs,
    ring_is_real,
    ring_pair_plane,
    transaxial_pairs,
)
from badblock.physics.scanners import get_scanner


def test_vision_matches_spec_formula():
    det1, det2, valid = transaxial_pairs(get_scanner("vision"))
    for v, m, e in [(0, 0, 0), (7, 3, 259), (49, 6, 519), (25, 0, 260), (12, 5, 1)]:
        c = 8 * v + m
        assert det1[v, m, e] == (c + e // 2 - 130) % 798
        assert det2[v, m, e] == (c + 399 - (e + 1) // 2 + 130) % 798
        real = det1[v, m, e] % 21 != 20 and det2[v, m, e] % 21 != 20
        assert valid[v, m, e] == real
    assert not valid[49, 7].any()  # sub-view 399 repeats sub-view 0: not part of this sinogram


@pytest.mark.parametrize("name", ["mini", "vision", "mct", "mmr"])
def test_every_real_transaxial_pair_once(name):
    sc = get_scanner(name)
    n = sc.crystals_per_ring
    det1, det2, valid = transaxial_pairs(sc)
    a, b = det1[valid], det2[valid]
    key = np.minimum(a, b) * n + np.maximum(a, b)
    assert len(np.unique(key)) == len(key)  # no real pair in two bins
    # ... and every real pair that the inverted formula puts in range is there: for ends
    # (a, b) as (det1, det2), e = N/2 + 2 off - (b - a) and c = a - e//2 + off (mod N)
    real = np.flatnonzero(crystal_is_real(sc))
    a, b = (g.ravel() for g in np.meshgrid(real, real, indexing="ij"))
    e = n // 2 + 2 * sc.radial_offset - (b - a) % n
    c = (a - e // 2 + sc.radial_offset) % n
    inside = (e >= 0) & (e < sc.n_bins) & (c < n // 2) & (a != b)
    assert inside.sum() == len(key)


def test_every_real_lor_of_mini_lands_in_exactly_one_bin():
    sc = get_scanner("mini")
    det1, det2, valid = transaxial_pairs(sc)
    pairs = plane_ring_pairs(sc)
    # forward: the LORs each bin sums, as (crystal, ring) pairs, unordered
    n, nr = sc.crystals_per_ring, sc.n_rings
    ends = []
    v, m, e = np.nonzero(valid)
    d1, d2 = det1[v, m, e], det2[v, m, e]
    for rp in pairs:
        x = (d1[:, None] * nr + rp[None, :, 0]).ravel()
        y = (d2[:, None] * nr + rp[None, :, 1]).ravel()
        ends.append(np.minimum(x, y) * (n * nr) + np.maximum(x, y))
    ends = np.concatenate(ends)
    assert len(np.unique(ends)) == len(ends)
    # inverse: every real LOR within the MRD and bin range maps to one bin holding it
    real_c = np.flatnonzero(crystal_is_real(sc))
    rings = np.flatnonzero(ring_is_real(sc))
    c1, r1, c2, r2 = (g.ravel() for g in np.meshgrid(real_c, rings, real_c, rings, indexing="ij"))
    first = (c1 * nr + r1) < (c2 * nr + r2)
    c1, r1, c2, r2 = c1[first], r1[first], c2[first], r2[first]
    p, v, e = lor_to_bin(sc, c1, r1, c2, r2)
    held = p >= 0
    assert held.sum() == len(ends)
    assert ((np.abs(r2 - r1) > sc.max_ring_diff) <= ~held).all()
    # the bin found really holds the LOR (either end may be det1)
    swapped = lor_to_bin(sc, c2, r2, c1, r1)
    for a, b in zip((p, v, e), swapped):
        assert np.array_equal(a, b)


def test_inverse_of_forward_mapping():
    sc = get_scanner("mini")
    det1, det2, valid = transaxial_pairs(sc)
    pairs = plane_ring_pairs(sc)
    v, m, e = np.nonzero(valid)
    for plane in (0, 11, 30, 56):
        for r1, r2 in pairs[plane]:
            got = lor_to_bin(sc, det1[v, m, e], r1, det2[v, m, e], r2)
            assert np.array_equal(got[0], np.full_like(v, plane))
            assert np.array_equal(got[1], v) and np.array_equal(got[2], e)


def test_ring_difference_sign():
    sc = get_scanner("mini")  # span 5: segment +1 holds r2 - r1 in 3..7
    det1, det2, _ = transaxial_pairs(sc)
    d1, d2 = det1[4, 0, 32], det2[4, 0, 32]
    plane, _, _ = lor_to_bin(sc, d1, 1, d2, 6)  # det2's ring - det1's ring = +5
    seg_of_plane = np.repeat([s.number for s in sc.segments], [s.n_planes for s in sc.segments])
    assert seg_of_plane[plane] == +1
    plane, _, _ = lor_to_bin(sc, d1, 6, d2, 1)
    assert seg_of_plane[plane] == -1
    for plane, rp in enumerate(plane_ring_pairs(sc)):
        seg = next(s for s in sc.segments if s.number == seg_of_plane[plane])
        rd = rp[:, 1] - rp[:, 0]
        assert ((rd >= seg.min_rd) & (rd <= seg.max_rd)).all()
        assert len(np.unique(rp.sum(axis=1))) == 1  # one plane = one r1 + r2


@pytest.mark.parametrize("name", ["vision", "mini"])
def test_axial_counts_alternate_as_span_dictates(name):
    sc = get_scanner(name)
    h = sc.span // 2
    counts = np.array([len(rp) for rp in plane_ring_pairs(sc)])
    mid = sc.n_rings - 1  # central plane of segment 0 (r1 + r2 = n_rings - 1)
    centre = counts[mid - 2: mid + 3]
    even, odd = (h + 1, h) if h % 2 == 0 else (h, h + 1)  # rd of the parity of r1 + r2
    want = [even if (mid + d) % 2 == 0 else odd for d in range(-2, 3)]
    assert centre.tolist() == want
    # oblique segment +1: span consecutive differences, (span +- 1) / 2 of each parity
    start = sum(s.n_planes for s in sc.segments[:2])
    seg = sc.segments[2]
    inner = counts[start + seg.n_planes // 2 - 1: start + seg.n_planes // 2 + 1]
    assert sorted(inner.tolist()) == [h, h + 1]
    assert counts.sum() == int((ring_pair_plane(sc) >= 0).sum())


def test_transaxial_counts_follow_mashing():
    sc = get_scanner("vision")
    _, _, valid = transaxial_pairs(sc)
    per_bin = valid.sum(axis=1)
    assert per_bin.max() == 8
    assert per_bin[49].max() == 7  # the last view holds sub-views 392..398
    # 8 consecutive sub-views meet at most one gap crystal per end: 6, 7 or 8 real LORs
    assert set(np.unique(per_bin[:49]).tolist()) <= {6, 7, 8}
    assert abs(per_bin[:49].mean() / 8 - (20 / 21) ** 2) < 0.01


@pytest.mark.parametrize("name", ["mini", "mct"])
def test_lor_geometry_passes_through_both_crystals(name):
    sc = get_scanner(name)
    det1, det2, _ = transaxial_pairs(sc)
    phi, s = lor_geometry(sc)
    n, r = sc.crystals_per_ring, sc.radius_mm
    for det in (det1, det2):
        ang = 2 * np.pi * det / n
        dist = r * (np.cos(ang) * np.cos(phi) + np.sin(ang) * np.sin(phi))
        np.testing.assert_allclose(dist, s, atol=1e-9 * r)
    assert abs(s[..., sc.n_bins // 2]).max() < 1e-9  # the centre bin passes through the axis
