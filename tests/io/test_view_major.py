"""STIR data stored view-major (Segment_View_AxialPos_TangPos) with several segments."""

from __future__ import annotations

import numpy as np
import pytest

from badblock.errors import BadInputError
from badblock.io import check_finite, read_scan, write_scan
from badblock.io.segview import SegmentedView

AXIAL = [3, 2, 2]  # segments 0, -1, +1 (STIR accepts any stream order; ring diffs decide)
T, V, B = 3, 4, 5


def _write_view_major(tmp_path, name="vm"):
    """Segments stored one after the other, each as [view, axial, bin], TOF outermost."""
    rng = np.random.default_rng(3)
    segs = [rng.normal(size=(T, V, a, B)).astype("<f4") for a in AXIAL]
    with open(tmp_path / f"{name}.s", "wb") as fh:
        for t in range(T):
            for s in segs:
                fh.write(s[t].tobytes())
    (tmp_path / f"{name}.hs").write_text(f"""!INTERFILE :=
name of data file := {name}.s
imagedata byte order := LITTLEENDIAN
!number format := float
!number of bytes per pixel := 4
number of dimensions := 5
matrix axis label [5] := timing positions
!matrix size [5] := {T}
matrix axis label [4] := segment
!matrix size [4] := 3
matrix axis label [3] := view
!matrix size [3] := {V}
matrix axis label [2] := axial coordinate
!matrix size [2] := {{{','.join(map(str, AXIAL))}}}
matrix axis label [1] := tangential coordinate
!matrix size [1] := {B}
minimum ring difference per segment := {{-1,-3,2}}
maximum ring difference per segment := {{1,-2,3}}
TOF mashing factor := 11
!END OF INTERFILE :=
""")
    # independent expectation: [T, plane, view, bin]
    expected = np.concatenate([s.transpose(0, 2, 1, 3) for s in segs], axis=1)
    return tmp_path / f"{name}.hs", expected


def test_view_major_segments_read_by_plane(tmp_path):
    hdr, expected = _write_view_major(tmp_path)
    scan = read_scan(hdr)
    assert scan.header.view_major
    assert [s.number for s in scan.header.segments] == [0, -1, 1]
    assert isinstance(scan.data, SegmentedView)
    assert scan.data.shape == expected.shape == (T, 7, V, B)
    np.testing.assert_array_equal(np.asarray(scan.data), expected)
    for t in range(T):
        for p in range(7):
            np.testing.assert_array_equal(scan.data[t, p], expected[t, p])
    np.testing.assert_array_equal(scan.data[1, 2:6], expected[1, 2:6])  # across a segment edge
    np.testing.assert_array_equal(scan.data[:, 4], expected[:, 4])
    np.testing.assert_array_equal(scan.data[2, [6, 0, 3]], expected[2, [6, 0, 3]])
    np.testing.assert_array_equal(scan.data[0, -1], expected[0, -1])
    np.testing.assert_array_equal(scan.data[0, 5:1:-1], expected[0, 5:1:-1])
    np.testing.assert_array_equal(scan.data[1, 3, 2], expected[1, 3, 2])
    np.testing.assert_array_equal(scan.data[1, :, :, 0], expected[1, :, :, 0])
    with pytest.raises(IndexError):
        scan.data[0, 7]
    check_finite(scan, chunk_planes=2)


def test_view_major_rewritten_plane_major_is_equal(tmp_path):
    hdr, expected = _write_view_major(tmp_path)
    scan = read_scan(hdr)
    out = write_scan(tmp_path / "pm.hs", scan.data, scan.header)
    back = read_scan(out)
    assert not back.header.view_major and isinstance(back.data, np.memmap)
    np.testing.assert_array_equal(np.asarray(back.data), expected)
    assert back.header.segments == scan.header.segments
    assert back.header.tof_mashing == 11


def test_view_major_nan_is_found(tmp_path):
    hdr, expected = _write_view_major(tmp_path)
    raw = np.fromfile(tmp_path / "vm.s", "<f4")
    # TOF 2, segment +1 (planes 5..6), view 1, axial 1 (plane 6), bin 0
    per_tof = sum(AXIAL) * V * B
    raw[2 * per_tof + (3 + 2) * V * B + 1 * 2 * B + 1 * B] = np.nan
    raw.tofile(tmp_path / "vm.s")
    with pytest.raises(BadInputError, match="NaN.*TOF 2, plane 6"):
        check_finite(read_scan(hdr), chunk_planes=3)
