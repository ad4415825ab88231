"""Streaming stays bounded: work on a 16 MB scan allocates about one chunk at a time."""

from __future__ import annotations

import tracemalloc

import numpy as np

from badblock.io import check_finite, read_scan, write_scan

SHAPE = (1, 256, 128, 128)  # float32: 16 MiB
MIB = 1 << 20


def _sparse_scan(tmp_path):
    raw = tmp_path / "big.raw"
    with open(raw, "wb") as fh:  # zeros without writing them
        fh.truncate(int(np.prod(SHAPE)) * 4)
    return read_scan(raw, shape=list(SHAPE), dtype="float32")


def _peak(fn) -> float:
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


def test_check_finite_memory_is_bounded_by_the_chunk(tmp_path):
    scan = _sparse_scan(tmp_path)
    assert _peak(lambda: check_finite(scan, chunk_planes=4)) < 1  # 4 planes = 256 KiB
    # what it avoids: one whole-scan temporary (here the 4 MiB boolean map)
    assert _peak(lambda: np.isfinite(np.asarray(scan.data)).all()) > 3.5


def test_write_scan_from_a_memmap_streams(tmp_path):
    scan = _sparse_scan(tmp_path)
    peak = _peak(lambda: write_scan(tmp_path / "copy.hs", scan.data, scan.header,
                                    format="interfile"))
    assert peak < 8  # chunks of at most 64 MiB, here the whole scan would be 16 MiB
    assert read_scan(tmp_path / "copy.hs").header.shape == SHAPE
