"""The training store: a folder of memory-mappable scans plus a JSON manifest.

Layout of a store folder::

    manifest.json            format name + version, layout, split, per-scan entries, config
    config.resolved.yaml     the resolved config of the run that built it (written by preprocess)
    mask.npy                 float32 [plane, view, bin] (only when a mask was given)
    scans/<id>.npy           counts [TOF, plane, view, bin] in their original dtype (copy mode)
    scans/<id>.truth.npy     float32 noiseless expectation (simulated scans)
    scans/<id>.target.npy    paired kind: the target scan
    stats/<id>.<role>.plane_max.npy, .plane_sum.npy   float64 [TOF, plane]

Every array is described in the manifest by ``{"file", "offset", "dtype", "shape"}`` so a
reader memory-maps it without parsing anything else; in reference mode (``preprocess.copy =
false``, the default of ``badblock preprocess``) ``file`` is the absolute path of the read-only
raw file and ``offset`` its data offset, and ``source`` records its size, modification time
and checksum: :meth:`Store.open` refuses the store when the size or time changed. A store
folder only ever appears under its final name whole (it is built under a temporary name and
renamed), and ``manifest.json`` is the last file written into it, so a folder without a
valid manifest is never a store.

Readers: :meth:`Store.open` (this module). Writers: :mod:`badblock.data.store_writer`
(``StoreWriter``, used by ``preprocess``; ``write_store`` for small stores from numpy arrays).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from badblock.errors import BadInputError
from badblock.io.segments import Segment

STORE_FORMAT = "badblock-store"
STORE_VERSION = 1
MANIFEST = "manifest.json"
KINDS = ("sinogram", "image", "paired")
ROLES = ("data", "truth", "target")
CHUNK_BYTES = 8 << 20  # bytes handled per step while streaming (whole planes)


# ----------------------------------------------------------------------------------------------
# Reading


def _array_file(store_path: Path, entry: dict) -> Path:
    file = Path(entry["file"])
    if not file.is_absolute():
        return store_path / file
    if not file.exists() and os.environ.get("BADBLOCK_DATA"):
        # A store built on the host and read in a container: the raw files are mounted under
        # $BADBLOCK_DATA; try the same file name there before giving up.
        alt = Path(os.environ["BADBLOCK_DATA"]) / file.name
        if alt.exists():
            return alt
    return file


def check_array_file(store_path: Path, entry: dict, what: str) -> Path:
    """The file behind one array entry, after checking it is still the one preprocess read.

    Every file must be large enough for the array. A referenced raw file (``in_place``) must
    also have the size and modification time recorded when the store was built: a changed
    raw file would otherwise silently feed the trainer data that no longer match the
    statistics, the empty planes or the checksum in the manifest. (Re-reading the checksum on
    every open would cost a full pass over the data; ``badblock preprocess`` does that when a
    file's time changed but its size did not.)
    """
    file = _array_file(store_path, entry)
    dtype = np.dtype(entry["dtype"])
    # exact integers: an edited manifest's 2^80 elements must not wrap to "needs 0 bytes"
    need = int(entry["offset"]) + math.prod(int(n) for n in entry["shape"]) * dtype.itemsize
    try:
        st = file.stat()
    except OSError:
        raise BadInputError(file, f"{what}: data file is missing") from None
    if st.st_size < need:
        raise BadInputError(file, f"{what}: file holds {st.st_size} bytes, the store expects at "
                                  f"least {need} (truncated or changed since preprocess)")
    src = entry.get("source") or {}
    if entry.get("in_place"):
        if src.get("size") is not None and st.st_size != src["size"]:
            raise BadInputError(file, f"{what}: raw file changed since preprocess "
                                      f"({st.st_size} bytes, was {src['size']})")
        if src.get("mtime_ns") is not None and st.st_mtime_ns != src["mtime_ns"]:
            raise BadInputError(file, f"{what}: raw file was modified since preprocess "
                                      "(modification time changed); run the same 'badblock "
                                      "preprocess' again: it re-checks the checksum and "
                                      "refreshes the store, or needs --force if the data "
                                      "changed")
    return file


def _memmap(store_path: Path, entry: dict, what: str) -> np.ndarray:
    file = check_array_file(store_path, entry, what)
    return np.memmap(file, dtype=np.dtype(entry["dtype"]), mode="r", offset=int(entry["offset"]),
                     shape=tuple(entry["shape"]))


class StoreScan:
    """One scan of a store. Arrays are opened lazily as read-only memory maps.

    ``data``: counts ``[TOF, plane, view, bin]`` in the original dtype; ``truth``: float32
    noiseless expectation or None; ``target``: the paired target scan or None;
    ``plane_max`` / ``plane_sum``: float64 ``[TOF, plane]`` of ``data``; ``nonempty``:
    bool ``[TOF, plane]`` (False for planes without a single count).
    """

    def __init__(self, store_path: Path, entry: dict):
        self._path = store_path
        self.entry = entry
        self.id: str = entry["id"]
        self.split: str = entry["split"]
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"StoreScan({self.id!r}, split={self.split!r}, shape={self.shape})"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.entry["data"]["shape"])

    def _array(self, role: str):
        if role not in self._cache:
            ent = self.entry.get(role)
            self._cache[role] = None if ent is None else _memmap(self._path, ent,
                                                                 f"scan {self.id} {role}")
        return self._cache[role]

    @property
    def data(self) -> np.ndarray:
        return self._array("data")

    @property
    def truth(self) -> np.ndarray | None:
        return self._array("truth")

    @property
    def target(self) -> np.ndarray | None:
        return self._array("target")

    def stat(self, name: str, role: str = "data") -> np.ndarray:
        """A statistic array (``plane_max`` or ``plane_sum``, float64 ``[TOF, plane]``)."""
        key = f"{role}.{name}"
        if key not in self._cache:
            rel = self.entry[role]["stats"][name]
            self._cache[key] = np.load(self._path / rel, allow_pickle=False)
        return self._cache[key]

    @property
    def plane_max(self) -> np.ndarray:
        return self.stat("plane_max")

    @property
    def plane_sum(self) -> np.ndarray:
        return self.stat("plane_sum")

    @property
    def nonempty(self) -> np.ndarray:
        if "nonempty" not in self._cache:
            t, p = self.shape[:2]
            keep = np.ones((t, p), bool)
            empty = np.asarray(self.entry["data"]["empty_planes"], np.int64).reshape(-1, 2)
            keep[empty[:, 0], empty[:, 1]] = False
            self._cache["nonempty"] = keep
        return self._cache["nonempty"]


class Store:
    """A training store opened for reading. See the module docstring for the layout."""

    def __init__(self, path: Path, manifest: dict):
        self.path = path
        self.manifest = manifest
        self.kind: str = manifest["kind"]
        self.scanner: str | None = manifest.get("scanner")
        segs = manifest.get("segments")
        self.segments: list[Segment] | None = [Segment(*map(int, s)) for s in segs] if segs \
            else None
        self.tof_order: str = manifest.get("tof_order", "none")
        self.shape: tuple[int, ...] = tuple(manifest["shape"])
        self.dtype = np.dtype(manifest["dtype"])
        self.scans: list[StoreScan] = [StoreScan(path, s) for s in manifest["scans"]]
        self._mask = None

    @classmethod
    def open(cls, path: str | os.PathLike, *, check_sources: bool = True) -> Store:
        """Open a complete store. With ``check_sources`` (default) every raw file the store
        references in place is checked (one ``stat`` each: present, same size and
        modification time as at preprocess), so a changed raw file is refused here rather
        than read; arrays are still mapped only when first used."""
        path = Path(path)
        mpath = path / MANIFEST
        if not path.is_dir():
            raise BadInputError(path, "no such store folder (run 'badblock preprocess' first)")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BadInputError(path, f"not a complete store (no {MANIFEST})") from None
        except (OSError, ValueError) as exc:
            raise BadInputError(mpath, f"unreadable store manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
            raise BadInputError(mpath, f"not a {STORE_FORMAT} manifest")
        if manifest.get("version") != STORE_VERSION:
            raise BadInputError(mpath, f"store version {manifest.get('version')} is not "
                                       f"supported (this badblock reads version {STORE_VERSION})")
        store = cls(path, manifest)
        if check_sources:
            for scan in manifest.get("scans", []):
                for role in ROLES:
                    ent = scan.get(role)
                    if isinstance(ent, dict) and ent.get("in_place"):
                        check_array_file(path, ent, f"scan {scan.get('id')} {role}")
        return store

    def __repr__(self) -> str:
        return (f"Store({os.fspath(self.path)!r}, kind={self.kind!r}, scans={len(self.scans)}, "
                f"shape={list(self.shape)})")

    @property
    def mask(self) -> np.ndarray | None:
        if self._mask is None and self.manifest.get("mask"):
            self._mask = np.load(self.path / self.manifest["mask"], mmap_mode="r",
                                 allow_pickle=False)
        return self._mask

    def split(self, name: str) -> list[StoreScan]:
        """The scans of one split: ``'train'`` or ``'val'``."""
        if name not in ("train", "val"):
            raise ValueError("split name must be 'train' or 'val'")
        return [s for s in self.scans if s.split == name]

    def scan(self, scan_id: str) -> StoreScan:
        for s in self.scans:
            if s.id == scan_id:
                return s
        raise KeyError(scan_id)


def is_store(path: str | os.PathLike) -> bool:
    """True when ``path`` is a complete store (has a manifest of this format); its referenced
    raw files are not checked."""
    try:
        Store.open(path, check_sources=False)
    except BadInputError:
        return False
    return True


__all__ = ["Store", "StoreScan", "is_store", "check_array_file", "STORE_FORMAT",
           "STORE_VERSION", "MANIFEST"]
