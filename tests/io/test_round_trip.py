"""write -> read gives the same arrays and header fields, for each format, dtype, byte order."""

from __future__ import annotations

import numpy as np
import pytest

from badblock.errors import BadInputError
from badblock.io import (
    ScanHeader,
    Segment,
    open_scan_writer,
    read_scan,
    tof_index_order,
    tof_time_order,
    write_scan,
)
from badblock.io.header import byte_order_name

SEGMENTS = [Segment(0, -1, 1, 4), Segment(-1, -4, -2, 3), Segment(1, 2, 4, 3)]
NAMES = {"flat": "scan.raw", "interfile": "scan.hs", "e7": "scan.s.hdr"}


def _array(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.normal(10, 5, shape).astype(dt)
    lo = 0 if dt.kind == "u" else -300
    return rng.integers(lo, 3000, shape).astype(dt)


@pytest.mark.parametrize("fmt", ["flat", "interfile", "e7"])
@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32"])
@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("n_tof", [1, 3])
def test_round_trip(tmp_path, fmt, dtype, order, n_tof):
    stored = np.dtype(dtype).newbyteorder("<" if order == "little" else ">")
    tof_order = {"flat": "siemens", "interfile": "linear", "e7": "siemens"}[fmt]
    header = ScanHeader(
        format=fmt, shape=(n_tof, 10, 6, 7), dtype=stored, data_file=tmp_path / "src",
        segments=SEGMENTS, tof_order=tof_order if n_tof > 1 else "none",
        tof_mashing=4 if n_tof > 1 else None)
    array = _array(header.shape, stored)
    out = write_scan(tmp_path / NAMES[fmt], array, header)
    back = read_scan(out)
    h = back.header
    np.testing.assert_array_equal(np.asarray(back.data), array)
    assert np.asarray(back.data).dtype == array.dtype
    assert h.dtype == stored and byte_order_name(h.dtype) == order
    assert (h.format, h.shape, h.segments) == (fmt, header.shape, SEGMENTS)
    assert h.tof_order == header.tof_order
    assert h.tof_mashing == header.tof_mashing
    assert h.data_offset == 0
    assert not back.data.flags.writeable


def test_non_tof_3d_array_gets_tof_one(tmp_path):
    a = _array((10, 6, 7), "float32")
    back = read_scan(write_scan(tmp_path / "x.hs", a))
    assert back.header.shape == (1, 10, 6, 7)
    np.testing.assert_array_equal(back.data[0], a)


@pytest.mark.parametrize("src,dst", [("flat", "interfile"), ("e7", "interfile"),
                                     ("interfile", "e7"), ("interfile", "flat")])
def test_format_conversion_reorders_tof_to_time(tmp_path, src, dst):
    n = 5
    order = {"flat": "siemens", "e7": "siemens", "interfile": "linear"}[src]
    # each TOF bin holds its own signed time offset, so the order is visible in the data
    offsets = np.empty(n)
    offsets[tof_time_order(n, order)] = np.arange(n) - n // 2
    a = np.broadcast_to(offsets[:, None, None, None], (n, 10, 2, 3)).astype("<f4")
    header = ScanHeader(format=src, shape=a.shape, dtype="<f4", data_file=tmp_path / "s",
                        segments=SEGMENTS, tof_order=order, tof_mashing=1)
    back = read_scan(write_scan(tmp_path / NAMES[dst], a, header, format=dst))
    got = np.asarray(back.data)[:, 0, 0, 0]
    in_time = got[tof_time_order(n, back.header.tof_order)]
    np.testing.assert_array_equal(in_time, np.arange(n) - n // 2)


def test_tof_orders():
    # Siemens: centre first, then interleaved pairs
    assert list(tof_time_order(5, "siemens")) == [3, 1, 0, 2, 4]
    assert list(tof_time_order(5, "linear")) == [0, 1, 2, 3, 4]
    for n in (1, 2, 5, 13, 33):
        perm, inv = tof_time_order(n, "siemens"), tof_index_order(n, "siemens")
        np.testing.assert_array_equal(perm[inv], np.arange(n))
        np.testing.assert_array_equal(inv[perm], np.arange(n))
    with pytest.raises(BadInputError, match="unknown TOF order"):
        tof_time_order(3, "sideways")


def test_e7_writer_carries_randoms_over(tmp_path):
    # an uncompressed e7 source with prompts (TOF) and non-TOF randoms in one data file
    shape = (3, 10, 6, 7)
    prompts = _array(shape, "<i2", 1)
    randoms = _array((1, *shape[1:]), "<i2", 2)
    src = write_scan(tmp_path / "src.s.hdr", prompts, ScanHeader(
        format="e7", shape=shape, dtype="<i2", data_file=tmp_path / "x", segments=SEGMENTS,
        tof_order="siemens", tof_mashing=2))
    with open(tmp_path / "src.s", "ab") as fh:
        fh.write(randoms.tobytes())
    text = src.read_text().replace("number of scan data types := 1",
                                   "number of scan data types := 2")
    text = text.replace("END OF INTERFILE :=", "scan data type description [2] := randoms\n"
                        f"data offset in bytes [2] := {prompts.nbytes}\nEND OF INTERFILE :=")
    src.write_text(text)
    scan = read_scan(src)
    np.testing.assert_array_equal(read_scan(src, data_type="randoms").data, randoms)
    out = write_scan(tmp_path / "out.s.hdr", np.asarray(scan.data) + 1, scan.header)
    np.testing.assert_array_equal(read_scan(out).data, prompts + 1)
    np.testing.assert_array_equal(read_scan(out, data_type="randoms").data, randoms)


def test_writer_keeps_input_keys_and_names_new_data(test_data, tmp_path):
    scan = read_scan(test_data / "stir_smalllong.hs")
    with open_scan_writer(tmp_path / "rep.hs", scan.header, dtype="uint16") as w:
        assert w.data.shape == scan.header.shape and w.data.flags.writeable
        w.data[:] = 7
    text = (tmp_path / "rep.hs").read_text()
    assert "name of data file := rep.s" in text
    assert "!number format := unsigned integer" in text
    assert "!number of bytes per pixel := 2" in text
    assert "Inner ring diameter (cm)" in text  # kept from the input
    assert text.startswith("!INTERFILE") and text.rstrip().endswith("!END OF INTERFILE :=")
    back = read_scan(tmp_path / "rep.hs")
    assert back.header.dtype == np.dtype("<u2") and int(back.data.max()) == 7
