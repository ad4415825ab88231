"""Finding and opening the preprocess stage's inputs: scan headers, flat files, ``.npy``
volumes and their truth / target siblings (headers only: no data are read here)."""

from __future__ import annotations

import glob
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from badblock.errors import BadInputError
from badblock.io.naming import is_sidecar_name
from badblock.io.segments import Segment

HEADER_SUFFIXES = (".hs", ".hdr", ".h33", ".mhdr")
GLOB_CHARS = set("*?[")


def sha256_small(path: Path) -> str:
    """sha256 of a small file (a header, a mask), read whole."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Source:
    """Where one input array lives and how it is laid out (no data read yet).

    ``shape`` is ``[TOF, plane, view, bin]``; ``view_major`` means the file stores each
    (TOF, segment) block as ``[view, plane, bin]`` (STIR's default) and is transposed while
    streaming.
    """

    path: Path  # what the user named: a header, a flat file or a .npy
    data_file: Path
    offset: int
    dtype: np.dtype
    shape: tuple[int, int, int, int]
    format: str
    view_major: bool = False
    segments: list[Segment] | None = None
    tof_order: str = "none"
    scanner: str | None = None
    header_path: Path | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the array: exact (Python integers), so a forged header's 10^30 elements
        neither overflow int64 nor wrap to a small number that a short file would match."""
        return math.prod(int(n) for n in self.shape) * self.dtype.itemsize

    def fingerprint(self) -> dict:
        st = self.data_file.stat()
        out = {"path": os.fspath(self.path.resolve()), "data_file":
               os.fspath(self.data_file.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if self.header_path is not None and self.header_path != self.data_file:
            out["header_sha256"] = sha256_small(self.header_path)
        return out


# ----------------------------------------------------------------------------------------------
# Finding inputs


def _is_header_file(path: Path) -> bool:
    from badblock.io.keys import looks_like_interfile

    try:
        with open(path, "rb") as fh:
            return looks_like_interfile(fh.read(4096))
    except OSError:
        return False


def _folder_inputs(folder: Path, kind: str, headerless: bool) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    files = [p for p in files if not is_sidecar_name(p)]
    headers = [p for p in files if p.suffix.lower() in HEADER_SUFFIXES and _is_header_file(p)]
    if headers:
        return headers
    arrays = [p for p in files if p.suffix.lower() == ".npy"]
    if arrays:
        return arrays
    if headerless:
        return [p for p in files if p.suffix.lower() not in (".json", ".yaml", ".yml", ".txt")]
    raise BadInputError(folder, "no scan headers (.hs, .s.hdr) or .npy files in this folder "
                                "(headerless raw files need --set preprocess.shape=[...])")


def _drop_data_of_headers(files: list[Path]) -> list[Path]:
    """``dir/*`` matches headers and their data files alike: keep the headers only."""
    heads = {(p.parent, p.name.partition(".")[0]) for p in files
             if p.suffix.lower() in HEADER_SUFFIXES and _is_header_file(p)}
    if not heads:
        return files
    return [p for p in files if (p.parent, p.name.partition(".")[0]) not in heads
            or (p.suffix.lower() in HEADER_SUFFIXES and _is_header_file(p))]


def resolve_inputs(patterns: list[str], root: str | os.PathLike = ".", kind: str = "sinogram",
                   headerless: bool = False, what: str = "input") -> list[Path]:
    """Files named by ``patterns`` (files, globs or folders; relative ones under ``root``).

    Order is kept (globs and folders sorted), duplicates dropped. Raises on a missing file
    or a glob that matched nothing.
    """
    out: list[Path] = []
    for pat in patterns:
        full = Path(root).joinpath(os.path.expanduser(pat))
        if GLOB_CHARS & set(pat):
            hits = sorted(Path(p) for p in glob.glob(os.fspath(full), recursive=True))
            files = []
            for hit in hits:
                if hit.is_dir():
                    files += _folder_inputs(hit, kind, headerless)
                elif not is_sidecar_name(hit) and hit.suffix.lower() != ".json":
                    files.append(hit)
            files = _drop_data_of_headers(files)
            if not files:
                raise BadInputError(pat, f"no {what} files matched this pattern")
            out += files
        elif full.is_dir():
            out += _folder_inputs(full, kind, headerless)
        elif full.exists():
            out.append(full)
        else:
            raise BadInputError(full, f"{what} file not found")
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


# ----------------------------------------------------------------------------------------------
# Opening one input (header only)


def _npy_source(path: Path, kind: str) -> Source:
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(fh, max_header_size=1 << 20)
            offset = fh.tell()
    except (ValueError, OSError) as exc:
        raise BadInputError(path, f"not a readable .npy file ({exc})") from None
    if dtype.hasobject or dtype.kind not in "iuf":
        raise BadInputError(path, f".npy holds {dtype}, not numbers (pickled data are refused)")
    if fortran and len(shape) > 1:
        raise BadInputError(path, "Fortran-ordered .npy cannot be streamed plane by plane; "
                                  "save it in C order")
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4:
        want = "[slice, H, W]" if kind == "image" else "[TOF, plane, view, bin]"
        raise BadInputError(path, f"array of shape {list(shape)} is not {want}")
    src = Source(path, path, offset, dtype, tuple(int(s) for s in shape), "npy")
    _check_size(src, exact=True)
    return src


def _check_size(src: Source, exact: bool) -> None:
    try:
        size = src.data_file.stat().st_size
    except FileNotFoundError:
        raise BadInputError(src.path, f"data file {src.data_file} not found") from None
    need = src.offset + src.nbytes
    if size < need or (exact and size != need):
        raise BadInputError(src.data_file, f"size {size} bytes does not match the declared shape "
                                           f"{list(src.shape)} {src.dtype.name} at offset "
                                           f"{src.offset} ({need} bytes)")


def _layout(path: Path, kind: str, pre) -> dict:
    """``read_scan`` keywords for a headerless file: the flat layout from ``pre``."""
    if _is_header_file(path) or not pre.shape:
        return {}
    shape = list(pre.shape)
    if kind == "image" and len(shape) == 3:
        shape = [1, *shape]
    out = {"shape": shape, "dtype": pre.dtype, "byte_order": pre.byte_order,
           "offset": pre.offset}
    if pre.tof_order != "auto":
        out["tof_order"] = pre.tof_order
    return out


def source_array(src: Source, kind: str, pre):
    """The data of ``src`` as a read-only ``[TOF, plane, view, bin]`` array (memory-mapped;
    view-major files are presented plane-major), for a check that needs the whole scan."""
    from badblock.io import read_scan

    if src.format == "npy":
        return np.load(src.path, mmap_mode="r", allow_pickle=False).reshape(src.shape)
    return read_scan(src.path, **_layout(src.path, kind, pre)).data


def mask_reports(scans: list, mask: np.ndarray, mask_path: Path, pre, check: bool) -> list:
    """The store's ``mask`` checked against each input that it describes the damage of: the
    inputs of kind ``paired`` (damaged scans; other kinds are complete scans the mask will
    thin), with :func:`badblock.physics.detect.check_scan_mask`. A contradiction is a
    :class:`BadInputError` naming the input; ``check`` False (--no-mask-check) skips it.
    Returns one JSON-able report per input (empty for other kinds)."""
    if pre.kind != "paired":
        return []
    if not check:
        return [{"checked": False, "why": "switched off (--no-mask-check)"}] * len(scans)
    from badblock.physics.detect import check_scan_mask

    return [check_scan_mask(source_array(s.data, pre.kind, pre), mask, s.data.scanner,
                            where=str(s.data.path), what=f"mask {mask_path}") for s in scans]


def open_source(path: Path, kind: str, pre) -> Source:
    """Parse ``path``'s header (or the flat layout from ``pre``, a PreprocessConfig)."""
    from badblock.io import read_scan

    if path.suffix.lower() == ".npy":
        return _npy_source(path, kind)
    scan = read_scan(path, **_layout(path, kind, pre))
    h = scan.header
    del scan  # only the header is needed; the data are streamed with plain reads
    src = Source(path, Path(h.data_file), int(h.data_offset), np.dtype(h.dtype), tuple(h.shape),
                 h.format, view_major=bool(getattr(h, "view_major", False)),
                 segments=list(h.segments) if h.segments else None, tof_order=h.tof_order,
                 scanner=h.scanner, header_path=h.header_path)
    if src.format == "flat" and pre.tof_order != "auto":
        src.tof_order = pre.tof_order
    return src


