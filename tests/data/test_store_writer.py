"""Writing stores: per-plane statistics, and every refusal leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest

from badblock.data.store import Store
from badblock.data.store_writer import PlaneStats, StoreWriter, array_chunks, write_store
from badblock.errors import BadInputError


def counts(shape, seed=0, lam=3.0):
    return np.random.default_rng(seed).poisson(lam, shape).astype(np.uint16)


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
