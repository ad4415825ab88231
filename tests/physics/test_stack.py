"""Context stacks: clamped inside the segment, views padded with the flipped wrap."""

from __future__ import annotations

import numpy as np
import pytest

from badblock.io.segments import segment_offsets
from badblock.physics.mask import dead_block_mask
from badblock.physics.scanners import get_scanner
from badblock.physics.stack import (
    context_planes,
    mask_stack,
    padded_views,
    plane_stack,
    view_padding,
)
from badblock.physics.wrap import radial_flip, wrap_partner
from tests.train.trainer_store import synthetic_scan

SC = get_scanner("mini")  # [3 TOF, 57 planes (23, 17, 17), 36 views, 64 bins]


@pytest.fixture(scope="module")
def data():
    """A mini scan [TOF, plane, view, bin] (uint16) with one empty plane, as the dataset's store."""
    counts, _ = synthetic_scan(0)
    counts[1, 30] = 0
    return counts


def test_context_clamps_inside_the_segment():
    offs = segment_offsets(SC.segments)  # 0, 23, 40, 57
    assert list(context_planes(0, 2, SC.segments)) == [0, 0, 0, 1, 2]
    assert list(context_planes(22, 2, SC.segments)) == [20, 21, 22, 22, 22]
    assert list(context_planes(int(offs[1]), 2, SC.segments)) == [23, 23, 23, 24, 25]
    assert list(context_planes(39, 1, SC.segments)) == [38, 39, 39]


def test_plane_stack_pads_with_the_flipped_wrap(data):
    assert padded_views(36, 8) == 40 and view_padding(36, 40) == (2, 2)
    p, t = 30, 1  # plane 30 lies in segment -1: its partner is in segment +1, TOF mirrored
    st = plane_stack(data, t, p, 2, SC.segments, "siemens", 40)
    assert st.shape == (5, 40, 64) and st.dtype == np.float32
    np.testing.assert_array_equal(st[:, 2:38], data[t, [28, 29, 30, 31, 32]])
    t2, p2 = wrap_partner(SC.segments, 3, "siemens", t, p)
    assert p2 != p
    # view 36 (first pad after) continues into the partner's view 0, radially flipped
    np.testing.assert_array_equal(st[2, 38], radial_flip(data[t2, p2, 0].astype(np.float32)))
    # and view -1 is the partner's last view, flipped -- not a plain wrap of the plane itself
    np.testing.assert_array_equal(st[2, 1], radial_flip(data[t2, p2, 35].astype(np.float32)))
    assert not np.array_equal(st[2, 1], data[t, p, 35])
    m = dead_block_mask(SC, [(3, 1)])
    ms = mask_stack(m, p, 2, SC.segments, 40)
    np.testing.assert_array_equal(ms[:, 2:38], m[[28, 29, 30, 31, 32]])
    np.testing.assert_array_equal(ms[2, 38], radial_flip(m[p2, 0]))
