"""Scanner presets: their published figures, segment tables, bad names."""

from __future__ import annotations

import re

import pytest

from badblock.errors import BadInputError
from badblock.physics.scanners import PRESETS, get_scanner


@pytest.mark.parametrize("name, crystals, rings, shape", [
    ("vision", 798, 80, (33, 815, 50, 520)),
    ("mct", 672, 55, (13, 621, 168, 400)),
    ("mmr", 504, 64, (1, 837, 252, 344)),
])
def test_preset_figures(name, crystals, rings, shape):
    sc = get_scanner(name)
    assert sc.crystals_per_ring == crystals
    assert sc.n_rings == rings
    assert sc.shape == shape
    assert sc.n_planes == shape[1]


def test_vision_segments_in_storage_order():
    segs = get_scanner("vision").segments
    assert [s.n_planes for s in segs] == [159, 139, 139, 101, 101, 63, 63, 25, 25]
    assert [s.number for s in segs] == [0, -1, 1, -2, 2, -3, 3, -4, 4]
    # signed ranges: segment +k holds positive ring differences, capped at the MRD of 79
    assert (segs[0].min_rd, segs[0].max_rd) == (-9, 9)
    assert (segs[2].min_rd, segs[2].max_rd) == (10, 28)
    assert (segs[1].min_rd, segs[1].max_rd) == (-28, -10)
    assert (segs[8].min_rd, segs[8].max_rd) == (67, 79)


@pytest.mark.parametrize("name", ["vision", "mct", "mmr", "mini"])
def test_planes_follow_two_rings_minus_one_minus_two_m(name):
    sc = get_scanner(name)
    for s in sc.segments:
        m = 0 if s.number == 0 else min(abs(s.min_rd), abs(s.max_rd))
        assert s.n_planes == 2 * sc.n_rings - 1 - 2 * m
        partner = next(t for t in sc.segments if t.number == -s.number)
        assert (partner.min_rd, partner.max_rd) == (-s.max_rd, -s.min_rd)


def test_mmr_span1_matches_real_header(test_data):
    text = (test_data / "siemens_mmr_sinogram.s.hdr").read_text()
    table = [int(x) for x in re.search(r"%segment table:=\{([^}]*)\}", text).group(1).split(",")]
    sc = get_scanner("mmr", span=1)
    assert [s.n_planes for s in sc.segments] == table
    assert sc.n_planes == 4084


def test_mini_is_small_and_pads_views():
    sc = get_scanner("mini")
    assert sc.n_views % 8 != 0  # the UNet's padding must exercise the flipped wrap
    assert sc.mash * sc.n_views == sc.crystals_per_ring // 2
    assert sc.gap_crystals == 1 and sc.mash > 1 and sc.span > 1 and 3 <= sc.n_tof <= 5
    assert 32 <= sc.n_views <= 64 and 64 <= sc.n_bins <= 128 and sc.n_planes < 100


def test_block_index_ranges():
    sc = get_scanner("vision")
    assert list(sc.block_crystals(1)) == list(range(21, 41))
    assert list(sc.block_rings(7)) == list(range(70, 80))
    mct = get_scanner("mct")
    assert list(mct.block_rings(1)) == list(range(14, 27))  # ring 13 is the virtual gap ring
    with pytest.raises(BadInputError, match="transaxial block 38"):
        sc.block_crystals(38)
    with pytest.raises(BadInputError, match="axial block 8"):
        sc.block_rings(8)


def test_bad_names_and_fields():
    with pytest.raises(BadInputError, match="unknown scanner 'visoin'"):
        get_scanner("visoin")
    with pytest.raises(BadInputError, match="unknown scanner field"):
        get_scanner("mini", spam=3)
    with pytest.raises(BadInputError, match="span 4"):
        get_scanner("mini", span=4)
    assert get_scanner("VISION") is PRESETS["vision"]
