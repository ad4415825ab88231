"""Bad input -> one-line BadInputError naming the file; writers leave nothing half-done."""

from __future__ import annotations

import json

import numpy as np
import pytest

from badblock.errors import BadInputError
from badblock.io import ScanHeader, check_finite, open_scan_writer, read_scan, write_scan


def _write_header(path, lines: dict, edits: dict):
    """Write ``lines`` (name -> header line) with ``edits`` replacing (None: dropping) some."""
    lines = {**lines, **edits}
    path.write_text("\n".join(v for v in lines.values() if v is not None) + "\n")
    return path


def _stir(tmp_path, **edits) -> str:
    """A small valid STIR header (2 segments, axial-major) with its data; edits replace lines."""
    lines = {
        "start": "!INTERFILE :=",
        "name": "name of data file := d.s",
        "order": "imagedata byte order := LITTLEENDIAN",
        "format": "!number format := float",
        "bytes": "!number of bytes per pixel := 4",
        "ndim": "number of dimensions := 4",
        "l4": "matrix axis label [4] := segment",
        "s4": "!matrix size [4] := 2",
        "l3": "matrix axis label [3] := axial coordinate",
        "s3": "!matrix size [3] := {3,2}",
        "l2": "matrix axis label [2] := view",
        "s2": "!matrix size [2] := 4",
        "l1": "matrix axis label [1] := tangential coordinate",
        "s1": "!matrix size [1] := 5",
        "min": "minimum ring difference per segment := {-1,2}",
        "max": "maximum ring difference per segment := {1,3}",
        "end": "!END OF INTERFILE :=",
    }
    hdr = _write_header(tmp_path / "h.hs", lines, edits)
    if not (tmp_path / "d.s").exists():
        np.arange(5 * 4 * 5, dtype="<f4").tofile(tmp_path / "d.s")
    return hdr


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_valid_stir_header_reads(tmp_path):
    scan = read_scan(_stir(tmp_path))
    assert scan.header.shape == (1, 5, 4, 5)
    assert [s.number for s in scan.header.segments] == [0, 1]


def test_size_mismatch_says_both_sizes(tmp_path):
    hdr = _stir(tmp_path)
    np.zeros(99, "<f4").tofile(tmp_path / "d.s")
    with pytest.raises(BadInputError) as err:
        read_scan(hdr)
    msg = _one_line(err)
    assert "d.s" in msg and "400" in msg and "396" in msg and "does not match" in msg


def test_missing_data_file(tmp_path):
    hdr = _stir(tmp_path, name="name of data file := nowhere.s")
    with pytest.raises(BadInputError) as err:
        read_scan(hdr)
    assert "nowhere.s" in _one_line(err) and "not found" in str(err.value)


def test_unknown_number_format(tmp_path):
    with pytest.raises(BadInputError) as err:
        read_scan(_stir(tmp_path, format="!number format := complex ascii"))
    assert "unknown number format 'complex ascii'" in _one_line(err)
    assert str(tmp_path / "h.hs") in str(err.value)


def test_missing_required_key(tmp_path):
    with pytest.raises(BadInputError) as err:
        read_scan(_stir(tmp_path, s2=None))
    assert "missing the required key 'matrix size [2]'" in _one_line(err)


def test_unparseable_value(tmp_path):
    with pytest.raises(BadInputError) as err:
        read_scan(_stir(tmp_path, s1="!matrix size [1] := seventy-five"))
    assert "cannot parse 'matrix size [1] := seventy-five'" in _one_line(err)


def test_segment_list_length_mismatch(tmp_path):
    with pytest.raises(BadInputError, match="2 segments but 3 axial sizes"):
        read_scan(_stir(tmp_path, s3="!matrix size [3] := {3,1,1}"))


def test_not_a_header_and_no_layout(tmp_path):
    raw = tmp_path / "x.raw"
    np.zeros(10, "<u2").tofile(raw)
    with pytest.raises(BadInputError) as err:
        read_scan(raw)
    assert "shape=" in _one_line(err) and "dtype=" in str(err.value)


def test_data_file_whose_header_exists_points_to_it(tmp_path):
    write_scan(tmp_path / "a.s.hdr", np.zeros((1, 2, 3, 4), "<u2"))
    with pytest.raises(BadInputError, match="read its header a.s.hdr"):
        read_scan(tmp_path / "a.s")


def test_missing_file(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        read_scan(tmp_path / "absent.hs")


def test_flat_read_with_overrides_and_sidecar(tmp_path):
    a = np.arange(2 * 3 * 4 * 5, dtype=">u2").reshape(2, 3, 4, 5)
    raw = tmp_path / "scan.bin"
    with open(raw, "wb") as fh:
        fh.write(b"HEAD")  # 4 bytes of something before the data
        fh.write(a.tobytes())
    scan = read_scan(raw, shape=[2, 3, 4, 5], dtype="uint16", byte_order="big", offset=4)
    np.testing.assert_array_equal(scan.data, a)
    assert scan.header.tof_order == "siemens"  # Siemens raw files are the usual flat input
    wrong = read_scan(raw, shape="2x3x4x5", dtype="uint16", offset=4)  # little by default
    assert not np.array_equal(wrong.data, a)
    with pytest.raises(BadInputError, match="does not match"):
        read_scan(raw, shape=[2, 3, 4, 5], dtype="uint16")  # offset forgotten: 4 bytes extra
    (tmp_path / "scan.bin.json").write_text(json.dumps(
        {"shape": [2, 3, 4, 5], "dtype": "uint16", "byte_order": "big", "offset": 4}))
    np.testing.assert_array_equal(read_scan(raw).data, a)
    # config defaults passed through (little-endian uint16, no shape) do not override it
    np.testing.assert_array_equal(read_scan(raw, dtype="uint16", byte_order="little").data, a)
    (tmp_path / "scan.bin.json").write_text(json.dumps({"shape": [2, 3, 4, 5], "dtyp": "u2"}))
    with pytest.raises(BadInputError, match="unknown sidecar keys"):
        read_scan(raw)


def test_flat_bad_override_values(tmp_path):
    raw = tmp_path / "x.raw"
    np.zeros(24, "<u2").tofile(raw)
    with pytest.raises(BadInputError, match="unknown dtype"):
        read_scan(raw, shape=[2, 3, 4], dtype="uint17")
    with pytest.raises(BadInputError, match="must be"):
        read_scan(raw, shape=[24], dtype="uint16")
    with pytest.raises(BadInputError, match="not 'little' or 'big'"):
        read_scan(raw, shape=[2, 3, 4], dtype="uint16", byte_order="middle")
    with pytest.raises(BadInputError, match="unknown read options"):
        read_scan(raw, shape=[2, 3, 4], dtype="uint16", tof_mash=2)
    with pytest.raises(BadInputError, match="apply to header files only"):
        read_scan(raw, shape=[2, 3, 4], dtype="uint16", data_type="randoms")


def test_header_files_ignore_flat_layout_defaults(test_data):
    # preprocess passes its config's flat layout (dtype uint16, shape []) for every input
    scan = read_scan(test_data / "stir_smalllong.hs", shape=[], dtype="uint16",
                     byte_order="little", offset=0)
    assert scan.header.dtype == np.dtype("<f4") and scan.header.shape == (1, 27, 64, 75)


def test_writer_refuses_to_overwrite_unless_forced(tmp_path):
    a = np.ones((1, 2, 3, 4), "<f4")
    out = write_scan(tmp_path / "o.hs", a)
    before = (tmp_path / "o.s").read_bytes()
    with pytest.raises(BadInputError, match="already exists"):
        write_scan(out, a * 2)
    assert (tmp_path / "o.s").read_bytes() == before
    write_scan(out, a * 2, force=True)
    assert float(read_scan(out).data.max()) == 2.0


def test_writer_never_writes_over_its_input(tmp_path):
    a = np.ones((1, 2, 3, 4), "<f4")
    src = read_scan(write_scan(tmp_path / "in.hs", a))
    for target in ("in.hs", "in.s"):
        with pytest.raises(BadInputError, match="scan being read"):
            write_scan(tmp_path / target, np.zeros_like(a), src.header, force=True)
    np.testing.assert_array_equal(read_scan(tmp_path / "in.hs").data, a)


def test_writer_leaves_nothing_on_error(tmp_path):
    header = ScanHeader(format="e7", shape=(1, 2, 3, 4), dtype="<u2", data_file=tmp_path / "x")
    with pytest.raises(RuntimeError):
        with open_scan_writer(tmp_path / "o.s.hdr", header) as w:
            w.data[:] = 5
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_stir_writer_refuses_siemens_tof_order(tmp_path):
    header = ScanHeader(format="interfile", shape=(3, 2, 3, 4), dtype="<f4",
                        data_file=tmp_path / "x", tof_order="siemens")
    with pytest.raises(BadInputError, match="STIR stores TOF bins in time order"):
        with open_scan_writer(tmp_path / "o.hs", header):
            pass
    assert list(tmp_path.iterdir()) == []


def test_check_finite_names_first_bad_tof_and_plane(tmp_path):
    a = np.ones((2, 9, 3, 4), "<f4")
    a[1, 7, 2, 1] = np.inf
    a[1, 8, 0, 0] = np.nan
    scan = read_scan(write_scan(tmp_path / "f.raw", a))
    with pytest.raises(BadInputError) as err:
        check_finite(scan, chunk_planes=2)
    msg = _one_line(err)
    assert "f.raw" in msg and "TOF 1, plane 7" in msg and "inf" in msg
    good = read_scan(write_scan(tmp_path / "g.raw", np.ones((2, 9, 3, 4), "<f4")))
    check_finite(good, chunk_planes=4)
    ints = read_scan(write_scan(tmp_path / "i.raw", np.ones((1, 2, 3, 4), "<u2")))
    check_finite(ints)


def _e7(tmp_path, data: bytes, **edits) -> str:
    """A hand-written Siemens e7 header (2 x 3 x 4 uint16, no TOF) with its data file."""
    lines = {
        "start": "!INTERFILE :=",
        "space": "%SMS-MI header name space := sinogram subheader",
        "name": "!name of data file := e.s",
        "format": "number format := unsigned integer",
        "bytes": "!number of bytes per pixel := 2",
        "ndim": "number of dimensions := 3",
        "s1": "matrix size [1] := 4",
        "s2": "matrix size [2] := 3",
        "s3": "matrix size [3] := 2",
        "offset": "data offset in bytes [1] := 0",
        "end": "END OF INTERFILE :=",
    }
    hdr = _write_header(tmp_path / "e.s.hdr", lines, edits)
    (tmp_path / "e.s").write_bytes(data)
    return hdr


@pytest.mark.parametrize("fmt, edits, need", [
    # 10^30 bins: more than int64 holds (was an OverflowError traceback)
    ("stir", {"s1": "!matrix size [1] := " + "1" + "0" * 30}, 4 * 5 * 4 * 10**30),
    ("e7", {"s1": "matrix size [1] := " + "1" + "0" * 30}, 2 * 3 * 2 * 10**30),
    # 2^62 x 4 bytes wraps int64 to 0 (was "needs 0 bytes" and then a crash)
    ("e7", {"s1": f"matrix size [1] := {2**62}", "bytes": "!number of bytes per pixel := 4"},
     2**62 * 3 * 2 * 4),
    ("e7", {"s2": f"matrix size [2] := {2**31}", "s3": f"matrix size [3] := {2**31}"},
     4 * 2**62 * 2),
    ("e7", {"offset": f"data offset in bytes [1] := {10**30}"}, 10**30 + 48),
    ("stir", {"s3": "!matrix size [3] := {" + str(2**61) + ",2}"}, (2**61 + 2) * 4 * 5 * 4),
])
def test_size_check_does_not_overflow(tmp_path, fmt, edits, need):
    hdr = _stir(tmp_path, **edits) if fmt == "stir" else _e7(tmp_path, bytes(48), **edits)
    with pytest.raises(BadInputError) as err:
        read_scan(hdr)
    msg = _one_line(err)
    assert "does not match" in msg and f"needs {need} bytes" in msg, msg


def test_flat_sidecar_size_does_not_overflow(tmp_path):
    raw = tmp_path / "x.raw"
    np.zeros(16, "<f4").tofile(raw)
    (tmp_path / "x.raw.json").write_text(json.dumps({"shape": [1, 1, 2**31, 2**31],
                                                     "dtype": "float32"}))
    with pytest.raises(BadInputError) as err:
        read_scan(raw)
    assert f"needs {2**64} bytes" in _one_line(err)
    with pytest.raises(BadInputError) as err:
        read_scan(raw, shape=[10**30, 1, 1, 1], dtype="uint16")
    assert f"needs {2 * 10**30} bytes" in _one_line(err)


def test_negative_offset_in_header(tmp_path):
    with pytest.raises(BadInputError) as err:
        read_scan(_e7(tmp_path, bytes(48), offset="data offset in bytes [1] := -8"))
    assert "negative" in _one_line(err)
