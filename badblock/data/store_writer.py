"""Writing training stores: per-plane statistics, array entries, the manifest, ``write_store``.

A store is built under a temporary folder name and renamed into place whole, with
``manifest.json`` written last (:mod:`badblock.data.store` describes the layout and reads it).
:class:`StoreWriter` is what preprocess uses; :func:`write_store` builds a small store from
numpy arrays in one call (tests and benchmarks).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from badblock import __version__
from badblock.data.store import (
    CHUNK_BYTES,
    KINDS,
    MANIFEST,
    ROLES,
    STORE_FORMAT,
    STORE_VERSION,
)
from badblock.errors import BadInputError
from badblock.io.segments import Segment
from badblock.utils.atomic import atomic_dir, atomic_save_npy, atomic_write_text, fsync_file

# ----------------------------------------------------------------------------------------------
# Statistics gathered in the single streaming pass


class PlaneStats:
    """Per-plane maximum, sum and emptiness of one array ``[TOF, plane, view, bin]``.

    Fed with consecutive chunks of whole planes in storage order (flat plane index
    ``t * n_planes + p``), so it never needs more than one chunk in memory. Reductions write
    straight into preallocated arrays of the data's own dtype (max) and an exact integer
    accumulator (sum), so a chunk costs two vectorised passes and no Python per plane; the
    float64 ``plane_max`` / ``plane_sum`` are made once, at the end.
    """

    def __init__(self, shape: Sequence[int], dtype: np.dtype):
        self.shape = tuple(int(s) for s in shape)
        n = self.shape[0] * self.shape[1]
        self.dtype = np.dtype(dtype)
        self._next = 0
        self.finite = True
        kind = self.dtype.kind
        self._signed = kind in "if"
        plane_len = self.shape[2] * self.shape[3]
        # Exact integer sums: uint32 is enough (and faster) while a plane cannot overflow it.
        if kind == "u" and plane_len * (2 ** (8 * self.dtype.itemsize) - 1) < 2**32:
            self._acc = np.dtype(np.uint32)
        elif kind in "ui":
            self._acc = np.dtype(np.int64 if kind == "i" else np.uint64)
        else:
            self._acc = np.dtype(np.float64)
        self._max = np.zeros(n, self.dtype.newbyteorder("="))
        self._sum = np.zeros(n, self._acc)
        # Signed and float data: a plane whose max is 0 may still hold negative values.
        self._any = np.zeros(n, bool) if self._signed else None
        self._done: dict[str, np.ndarray] = {}

    def update(self, planes: np.ndarray) -> None:
        """Add the next ``planes`` (``[n, view, bin]``) in storage order."""
        n = planes.shape[0]
        flat = planes.reshape(n, -1)
        i0, i1 = self._next, self._next + n
        np.maximum.reduce(flat, axis=1, out=self._max[i0:i1])
        np.add.reduce(flat, axis=1, dtype=self._acc, out=self._sum[i0:i1])
        if self._acc.kind == "f" and not np.isfinite(self._sum[i0:i1]).all():
            self.finite = False  # a NaN or inf anywhere in a plane makes its float sum so
        if self._any is not None:
            nz = self._max[i0:i1] != 0
            zero = np.flatnonzero(~nz)
            if zero.size:
                nz[zero] = np.minimum.reduce(flat[zero], axis=1) != 0
            self._any[i0:i1] = nz
        self._next = i1
        self._done.clear()

    @property
    def complete(self) -> bool:
        return self._next == self._max.size

    def _float(self, name: str, arr: np.ndarray) -> np.ndarray:
        if name not in self._done:
            self._done[name] = arr.astype(np.float64)
        return self._done[name]

    @property
    def plane_max(self) -> np.ndarray:
        """float64 ``[TOF * plane]`` (flat storage order)."""
        return self._float("plane_max", self._max)

    @property
    def plane_sum(self) -> np.ndarray:
        """float64 ``[TOF * plane]``: exact for integer data below 2**53 counts per plane."""
        return self._float("plane_sum", self._sum)

    def _nonempty_flat(self) -> np.ndarray:
        return self._any if self._any is not None else self._max != 0

    def nonempty(self) -> np.ndarray:
        return self._nonempty_flat().reshape(self.shape[:2]).copy()

    def empty_planes(self) -> list[list[int]]:
        """``[[t, p], ...]`` of planes with no counts at all."""
        t, p = np.nonzero(~self._nonempty_flat().reshape(self.shape[:2]))
        return [[int(a), int(b)] for a, b in zip(t, p)]


def array_chunks(array: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    """Consecutive blocks of whole planes ``[n, view, bin]`` of a 4-D array (views, no copy)."""
    t, p, v, b = array.shape
    flat = array.reshape(t * p, v, b)
    step = max(1, chunk_bytes // max(1, v * b * array.dtype.itemsize))
    for i in range(0, t * p, step):
        yield flat[i:i + step]


# ----------------------------------------------------------------------------------------------
# Writing


def npy_header(dtype: np.dtype, shape: Sequence[int]) -> bytes:
    """The bytes of a ``.npy`` header (version 1.0, 64-byte aligned) for a C-order array."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(int(s) for s in shape)})
    return buf.getvalue()


@dataclass
class _ArrayEntry:
    file: str  # relative to the store, or absolute (reference mode)
    offset: int
    dtype: str
    shape: list[int]
    in_place: bool = False
    stats: dict[str, str] = field(default_factory=dict)
    empty_planes: list[list[int]] = field(default_factory=list)
    source: dict | None = None  # {"path", "size", "mtime_ns", "checksum", "header", ...}

    def to_json(self) -> dict:
        out = {"file": self.file, "offset": self.offset, "dtype": self.dtype, "shape": self.shape,
               "in_place": self.in_place, "stats": self.stats,
               "n_empty": len(self.empty_planes), "empty_planes": self.empty_planes}
        if self.source is not None:
            out["source"] = self.source
        return out


class StoreWriter:
    """Builds a store in a folder that is not yet visible under its final name.

    Use :meth:`create` (a context manager that renames the folder into place only when the
    block finishes without error), then :meth:`add_array` for every array of every scan,
    :meth:`set_split`, and let the block end: the manifest is written last.
    """

    def __init__(self, folder: Path, kind: str = "sinogram", *, segments=None,
                 tof_order: str = "none", scanner: str | None = None,
                 mask: np.ndarray | None = None, mask_source: dict | None = None,
                 config: dict | None = None, extra: dict | None = None):
        if kind not in KINDS:
            raise BadInputError("preprocess.kind", f"must be one of {', '.join(KINDS)}")
        self.folder = Path(folder)
        self.kind = kind
        self.segments = [_segment_tuple(s) for s in segments] if segments else None
        self.tof_order = tof_order
        self.scanner = scanner
        self.config = config
        self.extra = dict(extra or {})
        self.mask_source = mask_source
        self.scans: dict[str, dict[str, _ArrayEntry]] = {}
        self.split: dict[str, Any] = {}
        self.shape: list[int] | None = None
        (self.folder / "scans").mkdir(parents=True, exist_ok=True)
        (self.folder / "stats").mkdir(exist_ok=True)
        self.has_mask = mask is not None
        if mask is not None:
            atomic_save_npy(self.folder / "mask.npy", np.ascontiguousarray(mask, np.float32))

    @classmethod
    def create(cls, path: str | os.PathLike, kind: str = "sinogram", *, force: bool = False,
               **kw) -> _WriterContext:
        return _WriterContext(Path(path), kind, force, kw)

    # -- arrays ------------------------------------------------------------------------------

    def data_path(self, scan_id: str, role: str = "data") -> Path:
        suffix = "" if role == "data" else f".{role}"
        return self.folder / "scans" / f"{scan_id}{suffix}.npy"

    def add_array(self, scan_id: str, role: str, stats: PlaneStats, *, file: str | os.PathLike,
                  offset: int, dtype: np.dtype, in_place: bool = False,
                  source: dict | None = None) -> None:
        """Record an array already written (or referenced) together with its statistics."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        if not stats.complete:
            raise ValueError(f"statistics of {scan_id}/{role} cover only part of the array")
        shape = list(stats.shape)
        if role == "data":
            if self.shape is None:
                self.shape = shape
            elif shape != self.shape:
                where = source.get("path") if source else scan_id
                raise BadInputError(where, f"shape {shape} differs from the store's other scans "
                                           f"{self.shape} (one store holds one shape)")
        stat_files = {}
        for name in ("plane_max", "plane_sum"):
            rel = f"stats/{scan_id}.{role}.{name}.npy"
            atomic_save_npy(self.folder / rel,
                            getattr(stats, name).reshape(shape[:2]).astype(np.float64))
            stat_files[name] = rel
        if in_place:
            file_text = os.fspath(Path(file).resolve())
        else:
            file_text = Path(file).resolve().relative_to(self.folder.resolve()).as_posix()
        self.scans.setdefault(scan_id, {})[role] = _ArrayEntry(
            file=file_text, offset=int(offset), dtype=np.dtype(dtype).str, shape=shape,
            in_place=in_place, stats=stat_files, empty_planes=stats.empty_planes(),
            source=source)

    def write_array(self, scan_id: str, role: str, array: np.ndarray,
                    source: dict | None = None) -> None:
        """Copy an in-memory (or memory-mapped) ``[TOF, plane, view, bin]`` array into the store."""
        array = np.asarray(array)
        if array.ndim != 4:
            raise BadInputError(scan_id, f"expected a 4-D array [TOF, plane, view, bin], "
                                         f"got shape {list(array.shape)}")
        stats = PlaneStats(array.shape, array.dtype)
        path = self.data_path(scan_id, role)
        header = npy_header(array.dtype, array.shape)
        with open(path, "wb") as fh:
            fh.write(header)
            for chunk in array_chunks(array):
                stats.update(chunk)
                fh.write(np.ascontiguousarray(chunk).data)
        if not stats.finite:
            raise BadInputError(source.get("path") if source else scan_id,
                                "contains NaN or infinite values")
        self.add_array(scan_id, role, stats, file=path, offset=len(header), dtype=array.dtype,
                       source=source)

    def set_split(self, val: Iterable[str], seed: int | None = None, rule: str = "") -> None:
        val = sorted(set(val))
        unknown = [v for v in val if v not in self.scans]
        if unknown:
            raise BadInputError("preprocess.val_scans", f"no such scan: {', '.join(unknown)} "
                                f"(scans: {', '.join(self.scans)})")
        self.split = {"seed": seed, "rule": rule, "val": val,
                      "train": [s for s in self.scans if s not in val]}

    # -- manifest ----------------------------------------------------------------------------

    def manifest(self) -> dict:
        if not self.scans:
            raise BadInputError(self.folder, "a store needs at least one scan")
        if not self.split:
            self.set_split([], rule="none")
        for sid, roles in self.scans.items():
            if "data" not in roles:
                raise ValueError(f"scan {sid} has no data array")
            if self.kind == "paired" and "target" not in roles:
                raise BadInputError(sid, "paired store: scan has no target")
        shape = self.shape or []
        scans = []
        val = set(self.split["val"])
        for sid, roles in self.scans.items():
            entry = {"id": sid, "split": "val" if sid in val else "train"}
            entry.update({role: arr.to_json() for role, arr in roles.items()})
            scans.append(entry)
        return {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "package_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "kind": self.kind,
            "shape": shape,
            "axes": ["tof", "plane", "view", "bin"],
            "dtype": next(iter(self.scans.values()))["data"].dtype,
            "n_scans": len(scans),
            "n_planes_per_scan": int(np.prod(shape[:2])) if shape else 0,
            "n_nonempty_planes": int(sum(np.prod(shape[:2]) - len(s["data"]["empty_planes"])
                                         for s in scans)),
            "scanner": self.scanner,
            "segments": self.segments,
            "tof_order": self.tof_order,
            "mask": "mask.npy" if self.has_mask else None,
            "mask_source": self.mask_source,
            "split": self.split,
            "scans": scans,
            "config": self.config,
            **self.extra,
        }

    def finish(self) -> None:
        # fsync copied data so that the rename cannot publish a store whose bytes are still
        # only in the page cache of a crashed machine: nothing re-checks a copy's bytes on
        # open. Referenced raw files are not ours to sync (they were complete before we read
        # them); the small files (stats, manifest) are fsync'ed by their atomic writes.
        for roles in self.scans.values():
            for arr in roles.values():
                if not arr.in_place:
                    fsync_file(self.folder / arr.file)
        atomic_write_text(self.folder / MANIFEST, manifest_json(self.manifest()))


_NUMBER_LIST = re.compile(r"\[\s+([-+\w.\",\s]*?)\s+\]")


def manifest_json(manifest: dict) -> str:
    """Indented JSON with short lists of scalars kept on one line (shapes, plane pairs)."""
    text = json.dumps(manifest, indent=2, default=str)
    return _NUMBER_LIST.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


class _WriterContext:
    def __init__(self, path: Path, kind: str, force: bool, kw: dict):
        self.path, self.kind, self.force, self.kw = path, kind, force, kw
        self._cm = None

    def __enter__(self) -> StoreWriter:
        self._cm = atomic_dir(self.path, replace=self.force, last=[MANIFEST])
        tmp = self._cm.__enter__()
        try:
            self.writer = StoreWriter(tmp, self.kind, **self.kw)
        except BaseException:
            self._cm.__exit__(*_exc_info())
            raise
        return self.writer

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.writer.finish()
            except BaseException as err:
                self._cm.__exit__(type(err), err, err.__traceback__)
                raise
        return self._cm.__exit__(exc_type, exc, tb)


def _exc_info():
    import sys

    return sys.exc_info()


def _segment_tuple(seg) -> list[int]:
    if isinstance(seg, Segment):
        return [seg.number, seg.min_rd, seg.max_rd, seg.n_planes]
    return [int(x) for x in seg]


def write_store(path: str | os.PathLike, scans: dict[str, np.ndarray], *,
                kind: str = "sinogram", truths: dict[str, np.ndarray] | None = None,
                targets: dict[str, np.ndarray] | None = None, val: Iterable[str] = (),
                segments=None, tof_order: str = "none", scanner: str | None = None,
                mask: np.ndarray | None = None, force: bool = False,
                config: dict | None = None) -> Path:
    """Build a store from in-memory arrays ``{id: [TOF, plane, view, bin]}`` (tests, tools)."""
    with StoreWriter.create(path, kind, force=force, segments=segments, tof_order=tof_order,
                            scanner=scanner, mask=mask, config=config) as w:
        for sid, arr in scans.items():
            w.write_array(sid, "data", arr)
            if truths and sid in truths:
                w.write_array(sid, "truth", np.asarray(truths[sid], np.float32))
            if targets and sid in targets:
                w.write_array(sid, "target", targets[sid])
        w.set_split(val, rule="explicit")
    return Path(path)


__all__ = ["StoreWriter", "PlaneStats", "write_store", "array_chunks", "npy_header",
           "manifest_json"]
