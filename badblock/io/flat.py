"""Flat binary scans: raw ``[TOF, plane, view, bin]`` arrays (bin fastest) without a header.

The layout comes from the caller (``shape=``, ``dtype=``, ``byte_order=``, ``offset=``) or from
a JSON sidecar ``<file>.json`` with those keys, which :func:`badblock.io.write_scan` writes
next to every flat file it makes. Given ``shape=``, the caller's values are the layout (the
sidecar then only supplies segments / TOF metadata the caller left out); without it the
sidecar's layout is used whole, so defaults passed through from a config (``dtype='uint16'``)
cannot garble a file the sidecar describes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from badblock.errors import BadInputError
from badblock.io.header import ScanHeader, byte_order_name, with_byte_order
from badblock.io.segments import Segment

LAYOUT_KEYS = ("shape", "dtype", "byte_order", "offset", "segments", "tof_order",
               "tof_mashing", "scanner")


_LAYOUT = ("shape", "dtype", "byte_order", "offset")


def sidecar_path(data_file: Path) -> Path:
    return data_file.with_name(data_file.name + ".json")


def read_sidecar(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(path, f"cannot read sidecar ({exc})") from None
    except json.JSONDecodeError as exc:
        raise BadInputError(path, f"sidecar is not valid JSON ({exc.msg}, line {exc.lineno})") \
            from None
    if not isinstance(obj, dict):
        raise BadInputError(path, "sidecar must hold a JSON object")
    unknown = sorted(set(obj) - set(LAYOUT_KEYS) - {"format", "version"})
    if unknown:
        raise BadInputError(path, f"unknown sidecar keys {unknown} (known: {list(LAYOUT_KEYS)})")
    return obj


def _parse_shape(where, shape) -> tuple[int, int, int, int]:
    if isinstance(shape, str):
        shape = [p for p in shape.replace("x", ",").replace(" ", ",").split(",") if p]
    try:
        dims = [int(n) for n in shape]
    except (TypeError, ValueError):
        raise BadInputError(where, f"shape {shape!r} is not a list of integers") from None
    if len(dims) == 3:  # non-TOF sinograms and image volumes: TOF = 1
        dims = [1, *dims]
    if len(dims) != 4 or min(dims) < 1:
        raise BadInputError(where, f"shape {dims} must be [TOF, plane, view, bin] "
                                   "(or [plane, view, bin]) with positive sizes")
    return tuple(dims)


def _parse_dtype(where, dtype, byte_order) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise BadInputError(where, f"unknown dtype {dtype!r}") from None
    if dt.kind not in "iuf" or dt.itemsize > 8:
        raise BadInputError(where, f"dtype {dt} is not an integer or float type")
    if byte_order is None:
        explicit = isinstance(dtype, str) and dtype[:1] in "<>"
        return dt if explicit else with_byte_order(dt, "little")  # Siemens raw files: little
    return with_byte_order(dt, byte_order)


def _parse_segments(where, segments) -> list[Segment] | None:
    if segments is None:
        return None
    out = []
    try:
        for s in segments:
            if isinstance(s, Segment):
                out.append(s)
            elif isinstance(s, dict):
                out.append(Segment(int(s["number"]), int(s["min_rd"]), int(s["max_rd"]),
                                   int(s["n_planes"])))
            else:
                out.append(Segment(*(int(v) for v in s)))
    except (TypeError, ValueError, KeyError):
        raise BadInputError(where, "segments must be [number, min_rd, max_rd, n_planes] "
                                   "entries") from None
    return out


def read_header(data_file: Path, overrides: dict) -> ScanHeader:
    """Header of a flat file from ``overrides`` and, where it exists, the JSON sidecar."""
    side = sidecar_path(data_file)
    sidecar = read_sidecar(side) if side.exists() else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    if "shape" in given:
        where = data_file
        layout = {k: v for k, v in sidecar.items() if k not in _LAYOUT}
        layout.update(given)
    else:
        where = side if sidecar else data_file
        layout = dict(sidecar)
        layout.update({k: v for k, v in given.items() if k not in _LAYOUT})
        given = {}
    if "shape" not in layout or "dtype" not in layout:
        for header in (data_file.with_name(data_file.name + ".hdr"),
                       data_file.with_suffix(".hs")):
            if header.is_file():
                raise BadInputError(data_file, f"is a data file without its layout; read its "
                                               f"header {header.name} instead")
        raise BadInputError(data_file, "headerless file: give shape=[TOF, plane, view, bin] and "
                                       "dtype= (and byte_order=, offset= if needed), or put them "
                                       f"in a sidecar {side.name}")
    shape = _parse_shape(where, layout["shape"])
    byte_order = layout.get("byte_order")
    if "dtype" in given and "byte_order" not in given:
        byte_order = None  # a dtype given by the caller carries its own order (or little)
    dtype = _parse_dtype(where, layout["dtype"], byte_order)
    try:
        offset = int(layout.get("offset", 0) or 0)
    except (TypeError, ValueError):
        raise BadInputError(where, f"offset {layout.get('offset')!r} is not an integer") from None
    if offset < 0:
        raise BadInputError(where, f"offset {offset} is negative")
    tof_order = layout.get("tof_order") or ("siemens" if shape[0] > 1 else "none")
    mashing = layout.get("tof_mashing")
    return ScanHeader(
        format="flat", shape=shape, dtype=dtype, data_file=data_file, data_offset=offset,
        segments=_parse_segments(where, layout.get("segments")), tof_order=tof_order,
        tof_mashing=None if mashing is None else int(mashing), scanner=layout.get("scanner"),
        header_path=side if side.exists() else None, keys={}, data_type=None)


def sidecar_json(header: ScanHeader) -> dict:
    return {
        "format": "flat",
        "shape": list(header.shape),
        "dtype": header.dtype.base.name,
        "byte_order": byte_order_name(header.dtype),
        "offset": 0,
        "segments": None if header.segments is None else
        [[s.number, s.min_rd, s.max_rd, s.n_planes] for s in header.segments],
        "tof_order": header.tof_order,
        "tof_mashing": header.tof_mashing,
        "scanner": header.scanner,
    }
