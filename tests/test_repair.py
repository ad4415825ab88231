"""Repair as a library call: streaming, data consistency, formats, refusals, output paths."""

from __future__ import annotations

import numpy as np
import pytest

from badblock.baselines import divide
from badblock.errors import BadInputError
from badblock.io import ScanHeader, read_scan, write_scan
from badblock.physics import dead_block_mask, get_scanner
from badblock.repair import output_for, repair_files, repair_scan

SCANNER = get_scanner("mini")


class DividePredictor:
    """The divide baseline in the predictor's signature: a real function, counts in and out.

    Records every plane image it is sent so tests can check which planes reached it."""

    context = 1
    mask_channel = True
    multiple = 8  # 36 views -> 40: exercises the flipped-wrap padding and the crop
    views_to = 0

    def __init__(self, scale: float = 1.0):
        self.seen = 0
        self.scale = scale

    def __call__(self, stacks, masks):
        assert stacks.shape[1] == 3 and masks.shape == stacks.shape
        self.seen += stacks.shape[0]
        centre, f = stacks[:, 1], masks[:, 1]
        return divide(centre, f) * self.scale  # N plane images as N planes


def _damaged(seed=0, dtype=np.uint16):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(5, 60, size=SCANNER.shape)
    mask = dead_block_mask(SCANNER, "3:1")
    counts = rng.binomial(rng.poisson(truth), 1 - mask).astype(dtype)
    return counts, mask


def _write(path, counts, fmt, tof_order):
    header = ScanHeader(format=fmt, shape=counts.shape, dtype=counts.dtype.newbyteorder("<"),
                        data_file=path, segments=SCANNER.segments, tof_order=tof_order,
                        scanner="mini")
    return write_scan(path, counts, header)


@pytest.mark.parametrize("fmt,name,tof_order", [("interfile", "dam.hs", "linear"),
                                                ("e7", "dam.s.hdr", "siemens"),
                                                ("flat", "dam.s", "siemens")])
def test_repair_keeps_format_and_copies_untouched(tmp_path, fmt, name, tof_order):
    counts, mask = _damaged()
    src = _write(tmp_path / name, counts, fmt, tof_order)
    scan = read_scan(src)
    pred = DividePredictor()
    out = tmp_path / "out" / name
    summary = repair_scan(scan, mask, pred, out, batch_size=7)
    rep = read_scan(out)
    assert rep.header.format == fmt and rep.header.shape == scan.header.shape
    assert rep.header.dtype == scan.header.dtype
    assert rep.header.segments == scan.header.segments
    assert rep.header.data_file != scan.header.data_file
    if fmt != "flat":
        kept = {k for k in scan.header.keys if "data file" not in k.lower()
                and "name of data" not in k.lower()}
        assert kept <= set(rep.header.keys)
    touched = (mask > 0).any(axis=(1, 2))
    data, orig = np.asarray(rep.data), np.asarray(scan.data)
    assert pred.seen == SCANNER.n_tof * touched.sum()  # untouched planes never reached it
    assert summary["planes_repaired"] == touched.sum()
    assert summary["planes_copied"] == (~touched).sum()
    np.testing.assert_array_equal(data[:, ~touched], orig[:, ~touched])
    hit = np.broadcast_to(mask > 0, data.shape)
    np.testing.assert_array_equal(data[~hit], orig[~hit])  # data consistency
    expect = np.rint(divide(orig, mask)).astype(np.uint16)
    np.testing.assert_array_equal(data[hit], expect[hit])
    assert not np.array_equal(data, orig)


def test_integer_output_is_rounded_and_clipped(tmp_path):
    counts, mask = _damaged()
    src = _write(tmp_path / "d.hs", counts, "interfile", "linear")
    logs = []
    summary = repair_scan(read_scan(src), mask, DividePredictor(scale=1e6), tmp_path / "r.hs",
                          log=logs.append)
    data = np.asarray(read_scan(tmp_path / "r.hs").data)
    assert data.max() == 65535
    live = np.broadcast_to((mask > 0) & (mask < 1), data.shape) & (np.asarray(
        read_scan(src).data) > 0)
    assert summary["bins_clipped_high"] == live.sum() > 0
    assert any("clipped" in m and str(summary["bins_clipped"]) in m for m in logs)


def test_refusals_leave_nothing(tmp_path):
    counts, mask = _damaged()
    src = _write(tmp_path / "d.hs", counts, "interfile", "linear")
    scan = read_scan(src)
    with pytest.raises(BadInputError, match="input scan"):
        repair_scan(scan, mask, DividePredictor(), src, force=True)
    with pytest.raises(BadInputError, match="does not match"):
        repair_scan(scan, mask[:, :, :-2], DividePredictor(), tmp_path / "o.hs")
    (tmp_path / "exists.hs").write_text("keep me")
    with pytest.raises(BadInputError, match="already exists"):
        repair_scan(scan, mask, DividePredictor(), tmp_path / "exists.hs")
    assert (tmp_path / "exists.hs").read_text() == "keep me"

    def broken(stacks, masks):
        raise RuntimeError("network died")

    with pytest.raises(RuntimeError):
        repair_scan(scan, mask, broken, tmp_path / "half.hs", context=1, mask_channel=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.hs", "d.s", "exists.hs"]
    repair_scan(scan, mask, DividePredictor(), tmp_path / "exists.hs", force=True)
    assert read_scan(tmp_path / "exists.hs").header.shape == SCANNER.shape


def test_repair_files_output_paths(tmp_path):
    assert output_for("a/x.hs", tmp_path / "one.hs", 1) == tmp_path / "one.hs"
    assert output_for("a/x.hs", tmp_path / "dir", 1) == tmp_path / "dir" / "x.hs"
    assert output_for("a/x.hs", tmp_path / "one.hs", 2) == tmp_path / "one.hs" / "x.hs"
    counts, mask = _damaged()
    a = _write(tmp_path / "a.hs", counts, "interfile", "linear")
    (tmp_path / "b").mkdir()
    b = _write(tmp_path / "b" / "a.hs", counts, "interfile", "linear")
    with pytest.raises(BadInputError, match="same file name"):
        repair_files([a, b], mask, DividePredictor(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
