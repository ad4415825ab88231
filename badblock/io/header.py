"""What a scan is: its header (layout, number format, segments, TOF order) and its data.

Every reader fills a :class:`ScanHeader`; every writer takes one. Shapes are always
``[TOF, plane, view, bin]`` (bin fastest); non-TOF data have TOF = 1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from badblock.errors import BadInputError
from badblock.io.segments import Segment, storage_numbers

FORMATS = ("flat", "interfile", "e7")
TOF_ORDERS = ("siemens", "linear", "none")


@dataclass
class ScanHeader:
    """Everything needed to map a scan's data file and to write a scan like it.

    ``shape`` is ``[TOF, plane, view, bin]``; ``dtype`` carries the byte order of the file
    (``np.dtype('<u2')``); ``data_offset`` is in bytes from the start of ``data_file``.
    ``segments`` are in stored plane order (their ``n_planes`` sum to ``shape[1]``).
    ``tof_order`` says how the TOF index maps to time: ``'siemens'`` (centre first,
    interleaved 0, -1, +1, -2, +2, ...), ``'linear'`` (earliest first, STIR) or ``'none'``
    (one TOF bin). ``keys`` holds the header's own keys (spelled as in the file) so a
    writer can keep them. ``data_type`` is the e7 scan data type read (``'prompts'``, ...).
    ``view_major`` marks STIR files stored ``[view, axial, bin]`` within each segment (STIR's
    Segment_View_AxialPos_TangPos); writers always store ``[plane, view, bin]``.
    """

    format: str
    shape: tuple[int, int, int, int]
    dtype: np.dtype
    data_file: Path
    data_offset: int = 0
    segments: list[Segment] | None = None
    tof_order: str = "none"
    tof_mashing: int | None = None
    scanner: str | None = None
    header_path: Path | None = None
    keys: dict = field(default_factory=dict)
    data_type: str | None = None
    view_major: bool = False

    def __post_init__(self) -> None:
        self.shape = tuple(int(n) for n in self.shape)
        self.dtype = np.dtype(self.dtype)
        self.data_file = Path(self.data_file)
        if self.header_path is not None:
            self.header_path = Path(self.header_path)
        where = self.header_path or self.data_file
        if self.format not in FORMATS:
            raise BadInputError(where, f"unknown scan format {self.format!r} (one of {FORMATS})")
        if len(self.shape) != 4 or min(self.shape) < 1:
            raise BadInputError(where, f"shape {self.shape} is not [TOF, plane, view, bin] > 0")
        self.data_offset = int(self.data_offset)
        if self.data_offset < 0:
            raise BadInputError(where, f"data offset {self.data_offset} bytes is negative")
        if self.tof_order not in TOF_ORDERS:
            raise BadInputError(where, f"unknown TOF order {self.tof_order!r} ({TOF_ORDERS})")
        if self.segments is not None:
            self.segments = list(self.segments)
            total = sum(s.n_planes for s in self.segments)
            if total != self.shape[1]:
                raise BadInputError(
                    where, f"segments hold {total} planes but the shape has {self.shape[1]}")

    @property
    def n_tof(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """Size of the data block in bytes (a Python int: a header may declare sizes whose
        product overflows int64, and the size check must still compare them exactly)."""
        return math.prod(self.shape) * self.dtype.itemsize

    def replace(self, **changes) -> ScanHeader:
        """A copy with some fields changed (``keys`` and ``segments`` copied, not shared)."""
        changes.setdefault("keys", dict(self.keys))
        if self.segments is not None:
            changes.setdefault("segments", list(self.segments))
        return dataclasses.replace(self, **changes)


class Scan:
    """A scan on disk: ``header`` and ``data``, a read-only memory map ``[TOF, plane, view, bin]``.

    ``data`` is an ``np.memmap`` (possibly a transposed view of one). Only STIR files stored
    view-major with several segments get a :class:`~badblock.io.segview.SegmentedView` instead
    (same indexing on the first two axes, ``np.asarray`` works), since no single stride fits them.
    """

    def __init__(self, path: str | Path, header: ScanHeader, data) -> None:
        self.path = Path(path)
        self.header = header
        self.data = data

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.header.shape

    def __repr__(self) -> str:
        h = self.header
        return (f"Scan({str(self.path)!r}, format={h.format}, shape={h.shape}, "
                f"dtype={h.dtype.str}, tof_order={h.tof_order})")


def with_byte_order(dtype, byte_order: str | None) -> np.dtype:
    """``dtype`` with byte order ``'little'``/``'big'`` (or ``'<'``/``'>'``); None keeps it."""
    dt = np.dtype(dtype)
    if byte_order is None or dt.itemsize == 1:
        return dt
    order = {"little": "<", "big": ">", "<": "<", ">": ">"}.get(str(byte_order).lower())
    if order is None:
        raise BadInputError("byte_order", f"{byte_order!r} is not 'little' or 'big'")
    return dt.newbyteorder(order)


def byte_order_name(dtype: np.dtype) -> str:
    """'little' or 'big' for the dtype as stored (native order resolved; 1-byte types: little)."""
    dt = np.dtype(dtype)
    if dt.byteorder == ">" or (dt.byteorder == "=" and np.little_endian is False):
        return "big"
    return "little"


def explicit_dtype(dtype) -> np.dtype:
    """The dtype with its byte order spelled out ('<' or '>'), as a file stores it."""
    dt = np.dtype(dtype)
    if dt.itemsize == 1:
        return dt
    return dt.newbyteorder("<" if byte_order_name(dt) == "little" else ">")


def tof_offsets(n: int, tof_order: str) -> np.ndarray:
    """Signed time offset (in TOF bins, 0 = centre) held at each TOF index: int [n].

    Siemens stores the centre bin first, then the pairs around it: 0, -1, +1, -2, +2, ...
    (the same interleaving as its segments; which of a pair comes first is the convention
    chosen here, the pairing t <-> -t does not depend on it). Linear order (STIR) runs from
    the earliest bin to the latest: -(n-1)/2 ... +(n-1)/2.
    """
    if tof_order == "siemens":
        return np.asarray(storage_numbers(n), dtype=np.int64)
    if tof_order in ("linear", "none"):
        return np.arange(n, dtype=np.int64) - (n - 1) // 2
    raise BadInputError("tof_order", f"unknown TOF order {tof_order!r} ({TOF_ORDERS})")


def tof_time_order(n: int, tof_order: str) -> np.ndarray:
    """Permutation from index order to time order: ``data[tof_time_order(n, o)]`` runs
    earliest to latest, i.e. element i is the index of the i-th bin in time."""
    return np.argsort(tof_offsets(n, tof_order), kind="stable")


def tof_index_order(n: int, tof_order: str) -> np.ndarray:
    """Inverse of :func:`tof_time_order`: ``time_ordered[tof_index_order(n, o)]`` gives back
    the stored index order."""
    return np.argsort(tof_time_order(n, tof_order), kind="stable")
