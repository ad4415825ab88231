"""Reading and writing scans in any supported format, by memory map.

``read_scan`` tells the format from the file's content (an ``!INTERFILE`` header is STIR or
Siemens e7 by its keys; anything else is flat binary), maps the data read-only and checks the
data file's size against the header. ``open_scan_writer`` gives a writable memmap and puts data
and header in place only when the ``with`` block ends cleanly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from badblock.errors import BadInputError
from badblock.io import e7, flat, interfile
from badblock.io.header import Scan, ScanHeader, tof_index_order, tof_time_order, with_byte_order
from badblock.io.keys import Keys, looks_like_interfile
from badblock.io.segview import SegmentedView
from badblock.utils.atomic import atomic_pair, fsync_file, reserve

FLAT_KEYS = {"shape", "dtype", "byte_order", "offset", "segments", "tof_order", "tof_mashing",
             "scanner"}
HEADER_KEYS = {"data_type", "data_file", "scanner", "tof_order"}


def _is_header(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except FileNotFoundError:
        raise BadInputError(path, "file not found") from None
    except IsADirectoryError:
        raise BadInputError(path, "is a folder, not a scan file") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot read ({exc.strerror})") from None
    return looks_like_interfile(head)


def read_header(path: str | os.PathLike, **overrides) -> ScanHeader:
    """Parse a scan's header without touching its data (so compressed e7 data parse too).

    ``path`` is an Interfile header (STIR ``.hs`` or Siemens ``.s.hdr``; the dialect is told
    from the keys, not the suffix) or a flat binary file. Overrides: for flat files ``shape``
    (``[TOF, plane, view, bin]`` or ``[plane, view, bin]``), ``dtype``, ``byte_order``
    (``'little'``/``'big'``), ``offset`` (bytes), ``segments``, ``tof_order``,
    ``tof_mashing``, ``scanner``; for headers ``data_type`` (e7: ``'prompts'`` (default) or
    ``'randoms'``), ``data_file``, ``scanner``, ``tof_order``; flat layout options are
    ignored for header files (the header states the layout). None or empty values count as
    not given, so config sections can be passed through as they are.
    """
    path = Path(path)
    overrides = {k: v for k, v in overrides.items()
                 if v is not None and not (isinstance(v, (list, tuple, str)) and len(v) == 0)}
    unknown = set(overrides) - FLAT_KEYS - HEADER_KEYS
    if unknown:
        raise BadInputError(path, f"unknown read options {sorted(unknown)} (known: "
                                  f"{sorted(FLAT_KEYS | HEADER_KEYS)})")
    if not _is_header(path):
        misplaced = set(overrides) - FLAT_KEYS
        if misplaced:
            raise BadInputError(path, f"options {sorted(misplaced)} apply to header files only")
        return flat.read_header(path, overrides)
    # A header states the layout itself: flat layout options (config defaults) do not apply.
    keys = Keys.read(path)
    if e7.is_e7(keys):
        header = e7.read_header(path, keys, overrides.get("data_type"))
    else:
        if overrides.get("data_type") not in (None, "prompts"):
            raise BadInputError(path, "data_type applies to Siemens e7 headers only")
        header = interfile.read_header(path, keys)
    if overrides.get("data_file") is not None:
        header.data_file = Path(overrides["data_file"])
    if overrides.get("scanner") is not None:
        header.scanner = overrides["scanner"]
    if overrides.get("tof_order") is not None:
        header.tof_order = overrides["tof_order"]
    return header


def _check_size(header: ScanHeader, exact: bool) -> None:
    data = header.data_file
    try:
        size = data.stat().st_size
    except FileNotFoundError:
        where = header.header_path or data
        raise BadInputError(where, f"data file {data} not found") from None
    need = header.data_offset + header.nbytes
    shape = "x".join(str(n) for n in header.shape)
    what = (f"{shape} {header.dtype.base.name} at offset {header.data_offset} needs {need} bytes,"
            f" data file has {size}")
    if size < need or (exact and size != need):
        raise BadInputError(data, f"size does not match the declared shape: {what}")


def _map(header: ScanHeader):
    """Memory map of the data, as ``[TOF, plane, view, bin]``."""
    n_tof, n_planes, n_views, n_bins = header.shape
    flat_map = np.memmap(header.data_file, dtype=header.dtype, mode="r",
                         offset=header.data_offset, shape=(math.prod(header.shape),))
    if not header.view_major:
        return flat_map.reshape(header.shape)
    segments = header.segments or []
    if len(segments) <= 1:
        return flat_map.reshape(n_tof, n_views, n_planes, n_bins).transpose(0, 2, 1, 3)
    per_tof = flat_map.reshape(n_tof, -1)
    parts, start = [], 0
    for s in segments:
        n = s.n_planes * n_views * n_bins
        block = per_tof[:, start:start + n].reshape(n_tof, n_views, s.n_planes, n_bins)
        parts.append(block.transpose(0, 2, 1, 3))
        start += n
    return SegmentedView(parts)


def read_scan(path: str | os.PathLike, **overrides) -> Scan:
    """Open a scan: header parsed, data memory-mapped read-only as ``[TOF, plane, view, bin]``.

    See :func:`read_header` for ``path`` and the overrides. A headerless file without
    ``shape=``/``dtype=`` is read with the layout from its JSON sidecar ``<file>.json``.
    Raises :class:`BadInputError` on a missing or wrongly sized data file, compressed e7
    data, unknown number formats, missing or unparseable header keys.
    """
    path = Path(path)
    header = read_header(path, **overrides)
    exact = True
    if header.format == "e7":
        keys = Keys(path, list(header.keys.items()))
        if e7.compressed(keys):
            raise BadInputError(path, "e7 data are compressed ('%compression := on'); compressed "
                                      "sinograms cannot be memory-mapped; decompress them with "
                                      "the Siemens e7 tools and read the uncompressed copy")
        # more scan data types (randoms) may follow this one in the same file
        exact = keys.int("number of scan data types", default=1) <= 1
    _check_size(header, exact=exact)
    return Scan(path, header, _map(header))


def check_finite(scan: Scan, chunk_planes: int = 64) -> None:
    """Raise :class:`BadInputError` naming the file and the first (TOF, plane) holding NaN or
    inf. Integer data pass at once; float data are read ``chunk_planes`` planes at a time,
    so memory stays bounded by one chunk."""
    if scan.header.dtype.kind != "f":
        return
    if chunk_planes < 1:
        raise BadInputError("chunk_planes", f"must be at least 1, got {chunk_planes}")
    n_tof, n_planes = scan.header.shape[:2]
    for t in range(n_tof):
        for p0 in range(0, n_planes, chunk_planes):
            block = np.asarray(scan.data[t, p0:p0 + chunk_planes])
            ok = np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
            if not ok.all():
                p = p0 + int(np.argmin(ok))
                plane = block[p - p0]
                kind = "NaN" if np.isnan(plane).any() else "inf"
                raise BadInputError(scan.header.data_file,
                                    f"non-finite value ({kind}) at TOF {t}, plane {p}")


class ScanWriter:
    """What :func:`open_scan_writer` yields: ``data`` (writable memmap ``header.shape``),
    ``header`` (the header that will be written) and ``path`` (the final header path, or
    the data path for flat files)."""

    def __init__(self, path: Path, header: ScanHeader, data: np.memmap):
        self.path = path
        self.header = header
        self.data = data


def output_paths(path: str | os.PathLike, fmt: str) -> tuple[Path, Path]:
    """(header or sidecar path, data path) for an output ``path``.

    flat: ``path`` is the data file, the sidecar ``<path>.json``. interfile: ``x.hs`` +
    ``x.s`` (``x.s`` given: ``x.hs`` beside it). e7: ``x.s.hdr`` + ``x.s`` (``x.s`` given:
    its ``.hdr`` is added).
    """
    path = Path(path)
    if fmt == "flat":
        return flat.sidecar_path(path), path
    name = path.name
    if fmt == "interfile":
        if name.lower().endswith(".hs"):
            return path, path.with_name(name[:-3] + ".s")
        if name.lower().endswith(".s"):
            return path.with_name(name[:-2] + ".hs"), path
        return path.with_name(name + ".hs"), path.with_name(name + ".s")
    if name.lower().endswith(".s.hdr"):
        return path, path.with_name(name[:-4])
    if name.lower().endswith(".hdr"):
        return path, path.with_name(name[:-4] + ".s")
    if name.lower().endswith(".s"):
        return path.with_name(name + ".hdr"), path
    return path.with_name(name + ".s.hdr"), path.with_name(name + ".s")


def _same_file(a: Path, b: Path | None) -> bool:
    if b is None:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _output_header(header: ScanHeader, dtype) -> ScanHeader:
    new_dtype = header.dtype if dtype is None else with_byte_order(
        np.dtype(dtype), "big" if header.dtype.byteorder == ">" else "little")
    if new_dtype.kind not in "iuf":
        raise BadInputError("dtype", f"{new_dtype} cannot be written (integers or floats only)")
    tof_order = header.tof_order
    if header.n_tof == 1:
        tof_order = "none"
    elif header.format == "interfile" and tof_order != "linear":
        raise BadInputError(header.header_path or header.data_file,
                            f"STIR stores TOF bins in time order but this header's TOF order is "
                            f"{tof_order!r}; write it with write_scan(..., format='interfile'), "
                            "which reorders the bins")
    elif header.format == "e7" and tof_order != "siemens":
        raise BadInputError(header.header_path or header.data_file,
                            f"e7 stores TOF bins centre-first but this header's TOF order is "
                            f"{tof_order!r}; write it with write_scan(..., format='e7'), "
                            "which reorders the bins")
    return header.replace(dtype=new_dtype, data_offset=0, tof_order=tof_order, view_major=False)


@contextlib.contextmanager
def open_scan_writer(path: str | os.PathLike, header: ScanHeader, *, dtype=None,
                     force: bool = False) -> Iterator[ScanWriter]:
    """Write a scan like ``header`` (its format, shape ``[TOF, plane, view, bin]``, segments,
    TOF layout and keys) to ``path``; ``dtype`` changes the number format (byte order kept).

    Yields a :class:`ScanWriter` whose ``data`` is a writable memmap; fill it inside the
    ``with`` block. The data file's whole size is allocated on disk before it is mapped
    (:func:`badblock.utils.atomic.reserve`), so a full disk is one :class:`BadInputError`, not
    a SIGBUS. Data and header go to temporaries named after this process and are put in place
    only when the block ends without an exception, header last
    (:func:`badblock.utils.atomic.replace_pair`): a kill at any moment never leaves a header
    over data it does not describe; otherwise nothing is left. An existing output is refused
    unless ``force``; writing over the scan ``header`` was read from is refused always.
    """
    header_out, data_out = output_paths(path, header.format)
    for out in (header_out, data_out):
        for src in (header.data_file, header.header_path):
            if out.exists() and _same_file(out, src):
                raise BadInputError(out, "is the scan being read; refusing to write over it "
                                         "(choose another output path)")
        if out.exists() and not force:
            raise BadInputError(out, "already exists (refusing to overwrite; use --force)")
    new = _output_header(header, dtype)
    new.data_file = data_out
    new.header_path = header_out
    # Other e7 scan data types (randoms) travel along, byte for byte, unless the dtype changed.
    extra = e7.other_blocks(header) if new.format == "e7" and new.dtype == header.dtype else []
    nbytes = math.prod(new.shape) * new.dtype.itemsize
    with atomic_pair(data_out, header_out) as (tmp_data, tmp_header):
        with open(tmp_data, "r+b") as fh:
            reserve(fh, nbytes + sum(n for _, _, n in extra), data_out)
        data = np.memmap(tmp_data, dtype=new.dtype, mode="r+", shape=new.shape)
        writer = ScanWriter(header_out if new.format != "flat" else data_out, new, data)
        yield writer
        data.flush()
        del data
        writer.data = None
        if extra:
            _copy_blocks(header.data_file, tmp_data, nbytes, extra)
        fsync_file(tmp_data)
        if new.format == "flat":
            text = json.dumps(flat.sidecar_json(new), indent=2, default=str) + "\n"
        elif new.format == "interfile":
            text = interfile.header_text(new, data_out.name)
        else:
            text = e7.header_text(new, data_out.name, [(d, n) for d, _, n in extra])
        with open(tmp_header, "w", encoding="utf-8" if new.format == "flat" else "latin-1") \
                as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        new.keys = Keys(header_out, _pairs(tmp_header)).as_dict() if new.format != "flat" \
            else {}


def _copy_blocks(source: Path, target: Path, start: int, blocks) -> None:
    """Copy ``(description, offset, nbytes)`` byte ranges of ``source`` into ``target`` one after
    the other from byte ``start`` (the space is already allocated)."""
    with open(source, "rb") as src, open(target, "r+b") as dst:
        dst.seek(start)
        for _, offset, nbytes in blocks:
            src.seek(offset)
            left = nbytes
            while left:
                chunk = src.read(min(left, 16 << 20))
                if not chunk:
                    raise BadInputError(source, f"ended early while copying its data block at "
                                                f"offset {offset}")
                dst.write(chunk)
                left -= len(chunk)
        dst.flush()
        os.fsync(dst.fileno())


def _pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text(encoding="latin-1").splitlines():
        if ":=" in line and not line.lstrip().startswith(";"):
            k, _, v = line.partition(":=")
            pairs.append((k.strip(), v.strip()))
    return pairs


def _guess_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".hs"):
        return "interfile"
    if name.endswith(".hdr"):
        return "e7"
    return "flat"


def write_scan(path: str | os.PathLike, array, header: ScanHeader | None = None, *,
               format: str | None = None, force: bool = False) -> Path:
    """Write ``array`` (``[TOF, plane, view, bin]`` or ``[plane, view, bin]``) as a scan.

    With ``header`` the output keeps its layout and keys (shape taken from the array);
    ``format`` converts (``'flat'``, ``'interfile'``, ``'e7'``; default: the header's, else
    from the suffix: ``.hs`` interfile, ``.hdr`` e7, other flat). Converting between TOF
    orders (Siemens centre-first <-> STIR time order) reorders the TOF bins. The array's
    dtype is written (little-endian unless the header says big). Returns the path of the
    header (flat: of the data file).
    """
    path = Path(path)
    arr = np.asarray(array) if not isinstance(array, (np.ndarray, SegmentedView)) else array
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise BadInputError(path, f"array of shape {arr.shape} is not [TOF, plane, view, bin]")
    fmt = format or (header.format if header is not None else _guess_format(path))
    if fmt not in ("flat", "interfile", "e7"):
        raise BadInputError(path, f"unknown format {fmt!r} (flat, interfile or e7)")
    shape = tuple(int(n) for n in arr.shape)
    if header is None:
        dtype = with_byte_order(arr.dtype, "little")
        order_in = "siemens" if fmt == "e7" else "linear"
        # no source file: the array lives in memory
        header = ScanHeader(format=fmt, shape=shape, dtype=dtype, data_file=Path("<array>"),
                            tof_order=order_in if shape[0] > 1 else "none")
    else:
        segments = header.segments
        if segments is not None and sum(s.n_planes for s in segments) != shape[1]:
            raise BadInputError(path, f"array has {shape[1]} planes but the header's segments "
                                      f"hold {sum(s.n_planes for s in segments)}")
        big = header.dtype.byteorder == ">"
        header = header.replace(shape=shape, dtype=with_byte_order(
            arr.dtype, "big" if big else "little"))
    order_in = header.tof_order if shape[0] > 1 else "none"
    order_out = {"interfile": "linear", "e7": "siemens"}.get(fmt, order_in)
    if shape[0] > 1 and order_in == "none":
        order_in = order_out
    perm = np.arange(shape[0])
    if order_out != order_in:
        # out[i] = in[perm[i]]: go through time order
        perm = tof_time_order(shape[0], order_in)[tof_index_order(shape[0], order_out)]
    changes = {"format": fmt, "tof_order": order_out if shape[0] > 1 else "none"}
    if fmt != header.format:
        changes["keys"] = {}  # another dialect's keys would mean something else (or nothing)
    header = header.replace(**changes)
    with open_scan_writer(path, header, force=force) as out:
        step = max(1, (64 << 20) // max(1, shape[2] * shape[3] * arr.dtype.itemsize))
        for t in range(shape[0]):
            for p0 in range(0, shape[1], step):
                out.data[t, p0:p0 + step] = arr[int(perm[t]), p0:p0 + step]
        return out.path
