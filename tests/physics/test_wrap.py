"""The flipped view wrap: exact on the LOR level, smooth on an analytic sinogram."""

from __future__ import annotations

import numpy as np
import pytest

from badblock.errors import BadInputError
from badblock.physics.geometry import lor_to_bin, plane_ring_pairs
from badblock.physics.scanners import get_scanner
from badblock.physics.wrap import (
    pad_views,
    partner_planes,
    radial_flip,
    tof_mirror,
    wrap_partner,
)


def pairs_at(sc, c, e):
    """The crystal-pair formula of the sinogram convention, any sub-view c (also past 180 deg)."""
    n, off = sc.crystals_per_ring, sc.radial_offset
    return (c + e // 2 - off) % n, (c + n // 2 - (e + 1) // 2 + off) % n


@pytest.mark.parametrize("name", ["mini", "vision", "mct", "mmr"])
def test_half_turn_swaps_ends_and_flips_bins(name):
    sc = get_scanner(name)
    n = sc.crystals_per_ring
    c = np.arange(n // 2)[:, None]
    e = np.arange(sc.n_bins)
    a1, a2 = pairs_at(sc, c + n // 2, e)
    flipped = radial_flip(np.broadcast_to(e, (1, sc.n_bins)))[0]  # bin index e' for each e
    b1, b2 = pairs_at(sc, c, flipped)
    # e' = n_bins - e holds the same crystals, det1 and det2 swapped (bin 0 has no partner)
    assert np.array_equal(a1[:, 1:], b2[:, 1:]) and np.array_equal(a2[:, 1:], b1[:, 1:])
    assert not (np.array_equal(a1[:, 0], b2[:, 0]) and np.array_equal(a2[:, 0], b1[:, 0]))


@pytest.mark.parametrize("name", ["mini", "mct", "vision"])
def test_view_past_the_end_is_partner_plane_flipped(name):
    sc = get_scanner(name)
    pairs = plane_ring_pairs(sc)
    partner = partner_planes(sc.segments)
    e = np.arange(1, sc.n_bins)
    for p in (0, sc.segments[0].n_planes + 3, sc.n_planes - 1):  # segments 0, -1 and the last
        r1, r2 = pairs[p][0]
        for m in range(sc.mash):
            c = sc.mash * sc.n_views + m  # view n_views, sub-view m
            d1, d2 = pairs_at(sc, c, e)
            plane, view, b = lor_to_bin(sc, d1, r1, d2, r2)
            assert (plane == partner[p]).all()
            assert np.array_equal(b, sc.n_bins - e)
            shift = sc.mash * sc.n_views - sc.crystals_per_ring // 2  # 0, or 1 on the Vision
            assert (view == (m + shift) // sc.mash).all()
    assert partner[sc.segments[0].n_planes + 3] == sc.segments[0].n_planes \
        + sc.segments[1].n_planes + 3


def test_tof_mirror():
    assert tof_mirror(5, "siemens").tolist() == [0, 2, 1, 4, 3]
    assert tof_mirror(4, "linear").tolist() == [3, 2, 1, 0]
    assert tof_mirror(1, "none").tolist() == [0]
    m = tof_mirror(33, "siemens")
    assert np.array_equal(m[m], np.arange(33))
    with pytest.raises(BadInputError, match="odd"):
        tof_mirror(4, "siemens")
    with pytest.raises(BadInputError, match="unknown TOF order"):
        tof_mirror(3, "interleaved")


def test_wrap_partner():
    sc = get_scanner("vision")
    segs = sc.segments
    assert wrap_partner(segs, 33, "siemens", 0, 5) == (0, 5)
    assert wrap_partner(segs, 33, "siemens", 1, 5) == (2, 5)
    assert wrap_partner(segs, 33, "linear", 0, 5) == (32, 5)
    assert wrap_partner(segs, 33, "siemens", 3, 159 + 7) == (4, 159 + 139 + 7)  # -1 -> +1
    assert wrap_partner(segs, 33, "siemens", 4, 159 + 139 + 7) == (3, 159 + 7)
    last = sc.n_planes - 1
    assert wrap_partner(segs, 1, "none", 0, last) == (0, last - 25)
    with pytest.raises(BadInputError, match="outside"):
        wrap_partner(segs, 33, "siemens", 0, 815)


def point_source_sinogram(sc, views, x0=60.0, y0=-35.0, sigma=6.0):
    """[view, bin] of a Gaussian point source at (x0, y0) mm, for any view indices, mashed."""
    n = sc.crystals_per_ring
    c = (sc.mash * np.asarray(views)[:, None] + np.arange(sc.mash))[..., None]
    e = np.arange(sc.n_bins)
    s = sc.radius_mm * np.sin(np.pi * (e - sc.n_bins / 2) / n)
    phi = np.pi * (2 * c + n / 2 - e % 2) / n
    d = s - (x0 * np.cos(phi) + y0 * np.sin(phi))
    return np.exp(-d ** 2 / (2 * sigma ** 2)).mean(axis=1)


def test_padding_continues_analytic_sinogram_across_the_seam():
    sc = get_scanner("mini")
    v = sc.n_views
    sino = point_source_sinogram(sc, np.arange(v))
    before, after = 3, 5  # 36 -> 44
    padded = pad_views(sino, None, before, after)
    truth = point_source_sinogram(sc, np.arange(-before, v + after))
    np.testing.assert_allclose(padded[:, 1:], truth[:, 1:], atol=1e-12)
    plain = np.pad(sino, ((before, after), (0, 0)), mode="wrap")
    assert np.abs(plain - truth).max() > 0.5
    # the seam step is no larger than the steps between neighbouring views inside
    inner = np.abs(np.diff(sino, axis=0)).max()
    seam = np.abs(padded[before + v] - padded[before + v - 1]).max()
    plain_seam = np.abs(plain[before + v] - plain[before + v - 1]).max()
    assert seam <= 1.01 * inner < plain_seam


def test_pad_views_shapes_and_partner():
    rng = np.random.default_rng(0)
    stack = rng.random((2, 5, 6, 8))  # [..., view, bin]
    partner = rng.random((2, 5, 6, 8))
    out = pad_views(stack, partner, 2, 9)
    assert out.shape == (2, 5, 17, 8)
    assert np.array_equal(out[..., 2:8, :], stack)
    assert np.array_equal(out[..., 8, :], radial_flip(partner[..., 0, :]))
    assert np.array_equal(out[..., 1, :], radial_flip(partner[..., 5, :]))
    assert np.array_equal(out[..., 14, :], stack[..., 0, :])  # two half turns: the plane itself
    assert np.array_equal(pad_views(stack, None, 0, 0), stack)
    with pytest.raises(BadInputError, match="partner shape"):
        pad_views(stack, partner[:1], 1, 1)
