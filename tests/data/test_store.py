"""The training store read back: layout, dtypes, statistics, refusals on open (data.store)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from badblock.data.store import MANIFEST, Store, is_store
from badblock.data.store_writer import write_store
from badblock.errors import BadInputError
from badblock.io.segments import Segment


def counts(shape, seed=0, lam=3.0):
    return np.random.default_rng(seed).poisson(lam, shape).astype(np.uint16)


def test_round_trip_keeps_dtype_layout_and_statistics(tmp_path):
    a = counts((3, 5, 4, 6), 0)
    a[1, 2] = 0  # an empty plane
    a[0, 0, 0, 0] = 60000  # near the uint16 top: sums must not overflow or round
    b = counts((3, 5, 4, 6), 1)
    truth = a.astype(np.float32) + 0.5
    mask = np.random.default_rng(2).random((5, 4, 6)).astype(np.float32)
    segs = [Segment(0, -1, 1, 3), Segment(-1, -3, -2, 1), Segment(1, 2, 3, 1)]
    path = write_store(tmp_path / "s", {"a": a, "b": b}, truths={"a": truth}, val=["b"],
                       segments=segs, tof_order="siemens", scanner="mini", mask=mask)
    store = Store.open(path)
    assert store.kind == "sinogram" and store.scanner == "mini"
    assert store.segments == segs and store.tof_order == "siemens"
    assert store.shape == (3, 5, 4, 6) and store.dtype == np.uint16
    np.testing.assert_array_equal(store.mask, mask)
    assert [s.id for s in store.split("train")] == ["a"]
    assert [s.id for s in store.split("val")] == ["b"]
    sa = store.scan("a")
    assert isinstance(sa.data, np.memmap) and sa.data.dtype == np.uint16
    np.testing.assert_array_equal(sa.data, a)
    np.testing.assert_array_equal(sa.truth, truth)
    assert sa.truth.dtype == np.float32 and sa.target is None
    np.testing.assert_array_equal(sa.plane_max, a.max(axis=(2, 3)))
    np.testing.assert_array_equal(sa.plane_sum, a.sum(axis=(2, 3), dtype=np.int64))
    assert sa.plane_sum.dtype == np.float64 and sa.plane_sum.shape == (3, 5)
    expected = np.ones((3, 5), bool)
    expected[1, 2] = False
    np.testing.assert_array_equal(sa.nonempty, expected)
    assert store.scan("b").truth is None
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["scans"][0]["data"]["empty_planes"] == [[1, 2]]
    assert manifest["format"] == "badblock-store" and manifest["version"] == 1
    with pytest.raises(ValueError):
        sa.data[0, 0, 0, 0] = 1  # read-only


def test_paired_and_image_kinds(tmp_path):
    x = counts((1, 4, 8, 8), 3)
    y = counts((1, 4, 8, 8), 4, lam=10)
    store = Store.open(write_store(tmp_path / "p", {"x": x}, kind="paired", targets={"x": y}))
    np.testing.assert_array_equal(store.scans[0].target, y)
    with pytest.raises(BadInputError, match="no target"):
        write_store(tmp_path / "q", {"x": x}, kind="paired")
    assert not (tmp_path / "q").exists()
    img = Store.open(write_store(tmp_path / "i", {"v": x.astype(np.float32)}, kind="image"))
    assert img.kind == "image" and img.scans[0].data.dtype == np.float32


def test_open_refuses_what_is_not_a_complete_store(tmp_path):
    with pytest.raises(BadInputError, match="no such store"):
        Store.open(tmp_path / "missing")
    half = tmp_path / "half"
    (half / "scans").mkdir(parents=True)
    with pytest.raises(BadInputError, match="not a complete store"):
        Store.open(half)
    assert not is_store(half)
    path = write_store(tmp_path / "s", {"a": counts((1, 2, 3, 4))})
    assert is_store(path)
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["version"] = 99
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BadInputError, match="version 99"):
        Store.open(path)


def test_truncated_shard_is_reported(tmp_path):
    path = write_store(tmp_path / "s", {"a": counts((2, 3, 4, 5))})
    shard = path / "scans" / "a.npy"
    shard.write_bytes(shard.read_bytes()[:-10])
    store = Store.open(path)
    with pytest.raises(BadInputError, match="truncated"):
        store.scans[0].data  # noqa: B018 (the property opens the memmap)


def test_a_manifest_claiming_more_than_int64_is_refused_with_the_exact_size(tmp_path):
    path = write_store(tmp_path / "s", {"a": counts((2, 3, 4, 5))})
    manifest = json.loads((path / MANIFEST).read_text())
    entry = manifest["scans"][0]["data"]
    entry["shape"] = [2**40, 2**40, 1, 1]  # 2^80 x 2 bytes wrapped to 0 in int64
    (path / MANIFEST).write_text(json.dumps(manifest))
    store = Store.open(path)
    with pytest.raises(BadInputError, match=f"expects at least {entry['offset'] + 2**81}"):
        store.scans[0].data  # noqa: B018 (the property opens the memmap)
