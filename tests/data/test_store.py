"""The training store: writer, reader, statistics, atomicity (badblock.data.store)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from badblock.data.store import (
    MANIFEST,
    PlaneStats,
    Store,
    StoreWriter,
    array_chunks,
    is_store,
    write_store,
)
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


def test_plane_stats_do_not_depend_on_chunking():
    a = counts((2, 7, 5, 3), 5, lam=1000).astype(np.int32) - 1000  # signed, negative values
    a[0, 3] = 0
    ref = PlaneStats(a.shape, a.dtype)
    ref.update(a.reshape(-1, 5, 3))
    small = PlaneStats(a.shape, a.dtype)
    for chunk in array_chunks(a, chunk_bytes=5 * 3 * 4 * 3):  # 3 planes at a time
        small.update(chunk)
    assert small.complete
    np.testing.assert_array_equal(small.plane_max, ref.plane_max)
    np.testing.assert_array_equal(small.plane_sum, ref.plane_sum)
    assert small.empty_planes() == [[0, 3]]  # a plane of negatives is not empty
    f = a.astype(np.float32)
    f[1, 1, 1, 1] = np.nan
    st = PlaneStats(f.shape, f.dtype)
    st.update(f.reshape(-1, 5, 3))
    assert not st.finite


@pytest.mark.parametrize("dtype", [">u2", "<i2", ">f4", "<u4"])
def test_plane_stats_exact_for_every_dtype_and_byte_order(dtype):
    """Max in the data's own dtype, sums in an exact accumulator, the big-endian files of some
    scanners included; a plane whose maximum is 0 is empty only if it has no negatives."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(3)
    top = 60000 if dt.kind == "u" and dt.itemsize == 2 else 30000
    a = rng.integers(0, top, (2, 4, 30, 40)).astype(dt)
    if dt.kind != "u":
        a[1, 2] = -np.abs(a[1, 2])
        a[1, 2, 0, 0] = 0  # max 0, but negative counts elsewhere: not empty
    a[0, 3] = 0
    st = PlaneStats(a.shape, a.dtype)
    for chunk in array_chunks(a, chunk_bytes=30 * 40 * dt.itemsize * 3):
        st.update(chunk)
    want_sum = a.astype(np.float64).sum(axis=(2, 3)).ravel()
    np.testing.assert_array_equal(st.plane_sum, want_sum)
    np.testing.assert_array_equal(st.plane_max, a.max(axis=(2, 3)).ravel().astype(np.float64))
    assert st.plane_max.dtype == st.plane_sum.dtype == np.float64
    assert st.empty_planes() == [[0, 3]] and st.finite


def test_failed_build_leaves_nothing(tmp_path):
    target = tmp_path / "store"
    with pytest.raises(RuntimeError):
        with StoreWriter.create(target) as w:
            w.write_array("a", "data", counts((1, 2, 3, 4)))
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_scans_of_different_shapes_are_refused(tmp_path):
    with pytest.raises(BadInputError, match="differs"):
        write_store(tmp_path / "s", {"a": counts((1, 2, 3, 4)), "b": counts((1, 2, 3, 5))})
    assert not (tmp_path / "s").exists()


def test_nan_is_refused(tmp_path):
    bad = np.ones((1, 2, 3, 4), np.float32)
    bad[0, 1, 2, 3] = np.inf
    with pytest.raises(BadInputError, match="NaN or infinite"):
        write_store(tmp_path / "s", {"a": bad})
    assert not (tmp_path / "s").exists()


def test_existing_store_is_not_overwritten_without_force(tmp_path):
    path = write_store(tmp_path / "s", {"a": counts((1, 2, 3, 4), 0)})
    with pytest.raises(BadInputError, match="already exists"):
        write_store(path, {"a": counts((1, 2, 3, 4), 1)})
    np.testing.assert_array_equal(Store.open(path).scans[0].data, counts((1, 2, 3, 4), 0))
    write_store(path, {"a": counts((1, 2, 3, 4), 1)}, force=True)
    np.testing.assert_array_equal(Store.open(path).scans[0].data, counts((1, 2, 3, 4), 1))


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
