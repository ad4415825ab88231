"""Real scanner / STIR files copied into tests/fixtures."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from badblock.errors import BadInputError
from badblock.io import read_header, read_scan, write_scan


def test_stir_sample_equals_its_raw_float32(test_data):
    scan = read_scan(test_data / "stir_smalllong.hs")
    h = scan.header
    assert h.format == "interfile"
    assert h.shape == (1, 27, 64, 75)
    assert h.dtype == np.dtype("<f4")
    assert h.view_major  # axis [3] is view: STIR's Segment_View_AxialPos_TangPos
    assert [(s.number, s.min_rd, s.max_rd, s.n_planes) for s in h.segments] == [(0, -8, 8, 27)]
    assert isinstance(scan.data, np.memmap)
    assert not scan.data.flags.writeable
    # independent read: the .s file per the header's axes, [view, axial, tangential]
    raw = np.fromfile(test_data / "stir_smalllong.s", dtype="<f4").reshape(64, 27, 75)
    expected = raw.transpose(1, 0, 2)[None]
    np.testing.assert_array_equal(np.asarray(scan.data), expected)
    assert float(np.abs(expected).sum()) > 0  # the sample is not all zeros


def test_stir_sample_round_trips_through_every_format(test_data, tmp_path):
    scan = read_scan(test_data / "stir_smalllong.hs")
    for fmt, name in (("interfile", "a.hs"), ("e7", "b.s.hdr"), ("flat", "c.raw")):
        out = write_scan(tmp_path / name, scan.data, scan.header, format=fmt)
        back = read_scan(out)
        np.testing.assert_array_equal(np.asarray(back.data), np.asarray(scan.data))
        assert back.header.segments == scan.header.segments
    # STIR keys of the input (scanner parameters) are kept in the written STIR header
    text = (tmp_path / "a.hs").read_text()
    assert "Number of detectors per ring" in text and "name of data file := a.s" in text


def test_stir_tof_header_parses(test_data):
    h = read_header(test_data / "stir_signa_tof_header.hs")
    assert h.format == "interfile"
    assert h.shape == (27, 1981, 224, 357)
    assert h.tof_order == "linear" and h.tof_mashing == 13
    assert len(h.segments) == 45
    assert sum(s.n_planes for s in h.segments) == 1981
    centre = h.segments[22]
    assert (centre.number, centre.min_rd, centre.max_rd, centre.n_planes) == (0, -1, 1, 89)
    assert (h.segments[0].number, h.segments[0].min_rd) == (-22, -44)
    assert (h.segments[-1].number, h.segments[-1].max_rd) == (22, 44)
    assert h.dtype == np.dtype("<f4")


def test_stir_tof_header_without_its_data_is_refused(test_data):
    with pytest.raises(BadInputError, match="not found"):
        read_scan(test_data / "stir_signa_tof_header.hs")


def test_mmr_e7_header_parses(test_data):
    h = read_header(test_data / "siemens_mmr_sinogram.s.hdr")
    assert h.format == "e7"
    assert h.shape == (1, 4084, 252, 344)
    assert h.dtype == np.dtype("<i2")
    assert h.scanner == "mmr"
    assert h.data_type == "prompts" and h.data_offset == 24504
    assert len(h.segments) == 121
    assert sum(s.n_planes for s in h.segments) == 4084
    assert [s.n_planes for s in h.segments[:5]] == [64, 63, 63, 62, 62]
    assert [s.number for s in h.segments[:5]] == [0, -1, 1, -2, 2]
    assert (h.segments[-1].min_rd, h.segments[-1].max_rd) == (60, 60)  # span 1, MRD 60
    randoms = read_header(test_data / "siemens_mmr_sinogram.s.hdr", data_type="randoms")
    assert randoms.data_offset == 73129037 and randoms.data_type == "randoms"


def test_mmr_unknown_data_type_is_refused(test_data):
    with pytest.raises(BadInputError, match="no scan data type 'trues'"):
        read_header(test_data / "siemens_mmr_sinogram.s.hdr", data_type="trues")


def _mmr_copy(test_data, tmp_path, compression: str):
    text = (test_data / "siemens_mmr_sinogram.s.hdr").read_text()
    assert "%compression:=on" in text
    hdr = tmp_path / "mmr.s.hdr"
    hdr.write_text(text.replace("%compression:=on", f"%compression:={compression}"))
    return hdr


def test_compressed_e7_is_refused_clearly(test_data, tmp_path):
    hdr = _mmr_copy(test_data, tmp_path, "on")
    # even with a data file of the right size beside it: compressed data cannot be mapped
    with open(tmp_path / "mmr.s", "wb") as fh:
        fh.truncate(24504 + 4084 * 252 * 344 * 2)
    with pytest.raises(BadInputError) as err:
        read_scan(hdr)
    assert "compressed" in str(err.value) and "memory-mapped" in str(err.value)
    assert str(hdr) in str(err.value)


def test_uncompressed_mmr_maps_without_reading(test_data, tmp_path):
    hdr = _mmr_copy(test_data, tmp_path, "off")
    n = 4084 * 252 * 344
    with open(tmp_path / "mmr.s", "wb") as fh:  # sparse: no disk blocks used
        fh.truncate(73129037 + n * 2)
        fh.seek(24504 + 2 * (344 * 252 * 70 + 344 * 3 + 5))
        fh.write(np.array([1234], "<i2").tobytes())
    scan = read_scan(hdr)
    assert scan.data.shape == (1, 4084, 252, 344)
    assert scan.data[0, 70, 3, 5] == 1234
    assert scan.data[0, 70, 3, 4] == 0


def test_mmr_data_file_too_small_names_both_sizes(test_data, tmp_path):
    hdr = _mmr_copy(test_data, tmp_path, "off")
    (tmp_path / "mmr.s").write_bytes(b"\0" * 1000)
    with pytest.raises(BadInputError) as err:
        read_scan(hdr)
    msg = str(err.value)
    assert "1000" in msg and str(24504 + 4084 * 252 * 344 * 2) in msg


def test_fixture_copy_is_independent_of_shared(test_data, tmp_path):
    # the STIR pair still reads after being moved elsewhere under another name
    shutil.copy(test_data / "stir_smalllong.hs", tmp_path / "renamed.hs")
    shutil.copy(test_data / "stir_smalllong.s", tmp_path / "renamed.s")
    scan = read_scan(tmp_path / "renamed.hs")
    assert scan.header.data_file == tmp_path / "renamed.s"


def test_dialect_is_told_from_content_not_suffix(test_data, tmp_path):
    shutil.copy(test_data / "siemens_mmr_sinogram.s.hdr", tmp_path / "odd.hs")
    assert read_header(tmp_path / "odd.hs").format == "e7"
    shutil.copy(test_data / "stir_smalllong.hs", tmp_path / "odd.hdr")
    shutil.copy(test_data / "stir_smalllong.s", tmp_path / "smalllong.s")
    scan = read_scan(tmp_path / "odd.hdr")
    assert scan.header.format == "interfile" and scan.header.shape == (1, 27, 64, 75)
    # and a binary file named like a header is a flat file, not a header
    np.zeros(6, "<u2").tofile(tmp_path / "raw.hdr")
    assert read_scan(tmp_path / "raw.hdr", shape=[1, 2, 3], dtype="uint16").header.format == "flat"


# tests/fixtures/siemens_tof_small.s.hdr: a hand-written Siemens TOF e7 header (not one the
# writer made) over siemens_tof_small.s: 256 bytes of 0xA5, then prompts int16 [3 TOF, 7 planes,
# 4 projections, 5 bins] with value 1000 t + 100 p + 10 v + b, then randoms [7, 4, 5] (no TOF)
# with 3000 + 100 p + 10 v + b. The data file name is the acquisition PC's Windows path.
def _expected_tof_small(data_type: str) -> np.ndarray:
    t, p, v, b = np.meshgrid(np.arange(3), np.arange(7), np.arange(4), np.arange(5),
                             indexing="ij")
    base = 100 * p + 10 * v + b
    return 1000 * t + base if data_type == "prompts" else 3000 + base[:1]


@pytest.mark.parametrize("data_type, offset", [("prompts", 256), ("randoms", 1096)])
def test_handwritten_tof_e7_prompts_and_randoms(test_data, data_type, offset):
    scan = read_scan(test_data / "siemens_tof_small.s.hdr", data_type=data_type)
    h = scan.header
    assert h.format == "e7" and h.data_type == data_type and h.data_offset == offset
    assert h.data_file == test_data / "siemens_tof_small.s"
    assert h.dtype == np.dtype("<i2")
    n_tof = 3 if data_type == "prompts" else 1  # Siemens randoms carry no TOF axis
    assert h.shape == (n_tof, 7, 4, 5)
    assert h.tof_order == ("siemens" if n_tof > 1 else "none")
    assert h.tof_mashing == (8 if n_tof > 1 else None)
    assert [(s.number, s.min_rd, s.max_rd, s.n_planes) for s in h.segments] == \
        [(0, 0, 0, 3), (-1, -1, -1, 2), (1, 1, 1, 2)]
    want = _expected_tof_small(data_type)
    np.testing.assert_array_equal(np.asarray(scan.data), want)
    # and the same bytes read by hand at the header's offset
    raw = (test_data / "siemens_tof_small.s").read_bytes()
    assert raw[:256] == b"\xa5" * 256
    by_hand = np.frombuffer(raw, "<i2", count=want.size, offset=offset).reshape(want.shape)
    np.testing.assert_array_equal(by_hand, want)


def test_handwritten_tof_e7_repair_copy_keeps_randoms(test_data, tmp_path):
    # a file written like it (as repair does) keeps the randoms block byte for byte
    src = read_scan(test_data / "siemens_tof_small.s.hdr")
    out = write_scan(tmp_path / "fixed.s.hdr", np.asarray(src.data) + 1, src.header)
    back = read_scan(out, data_type="randoms")
    np.testing.assert_array_equal(np.asarray(back.data), _expected_tof_small("randoms"))
    np.testing.assert_array_equal(np.asarray(read_scan(out).data),
                                  _expected_tof_small("prompts") + 1)
