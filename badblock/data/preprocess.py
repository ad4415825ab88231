"""The preprocess stage: raw scans -> a training store, in one streaming pass per file.

Every input file is read exactly once, sequentially, through a sliding read-only memory map
(``MAP_BYTES`` at a time, dropped as soon as it is used) in ~1 MiB chunks of whole planes:
from each chunk, while it is in the CPU cache, the xxh3_128 checksum, the per-plane maximum
and sum and the empty planes are computed and (copy mode) the bytes are written into the
store. Peak resident memory is one window plus the interpreter, whatever the input size.

By default (``preprocess.copy = false``) the store references the read-only raw files in place:
it holds the statistics and the manifest, and readers map the raw file at its data offset; a
raw file whose size or modification time changed since is refused when the store is opened.
Copy mode writes the counts into the store (self-contained, but every byte is written and
fsync'ed, which costs more than the whole default run).

Inputs: scan headers (STIR ``.hs``, Siemens ``.s.hdr``), headerless flat files (with
``preprocess.shape``/``dtype`` or a JSON sidecar), ``.npy`` arrays; for ``kind='image'``
volumes ``[slice, H, W]`` stored as ``[1, slice, H, W]``; for ``kind='paired'`` a target scan
per input. A sibling ``<stem>.truth.<ext>`` (float32, same shape) is stored as the truth.
"""

from __future__ import annotations

import glob
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from badblock.data.store import (
    MANIFEST,
    PlaneStats,
    Store,
    StoreWriter,
    npy_header,
)
from badblock.errors import BadInputError
from badblock.io.segments import Segment

# Checksum of every input file, recorded as "xxh3_128:<hex>". Not cryptographic: it detects
# changed or corrupted raw files, it does not defend against forgery. Measured here (one core,
# 1 MiB updates): xxh3_128 17 GB/s, sha256 (SHA-NI) 0.8-1.6 GB/s, blake2b 0.5-0.95 GB/s;
# sha256 alone took twice as long as all of `cp`. Small files (headers, mask) keep sha256.
CHECKSUM = "xxh3_128"
# Whole planes per step, ~1 MiB: small enough to stay in the 2 MiB L2 cache while it is read,
# hashed, reduced and written (measured: 1 MiB chunks 4.9 GB/s, 8 MiB 3.8 GB/s end to end).
CHUNK_BYTES = 1 << 20
READAHEAD_BYTES = 64 << 20  # asked of the kernel ahead of the reader (page cache, not RSS)
WRITEBACK_BYTES = 16 << 20  # copy mode: start the disk write of the copy every this many bytes
MAP_BYTES = 16 << 20  # bytes of the input mapped at a time (counts in RSS while mapped)
PROGRESS_BYTES = 64 << 20  # progress bar updates every this many bytes
HEADER_SUFFIXES = (".hs", ".hdr", ".h33", ".mhdr")
GLOB_CHARS = set("*?[")
SETTINGS_KEYS = ("kind", "shape", "dtype", "byte_order", "offset", "copy", "val_fraction",
                 "val_scans", "tof_order")


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
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def fingerprint(self) -> dict:
        st = self.data_file.stat()
        out = {"path": os.fspath(self.path.resolve()), "data_file":
               os.fspath(self.data_file.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if self.header_path is not None and self.header_path != self.data_file:
            out["header_sha256"] = _hash_small(self.header_path)
        return out


@dataclass
class ScanInputs:
    id: str
    data: Source
    truth: Source | None = None
    target: Source | None = None

    def roles(self) -> list[tuple[str, Source]]:
        out = [("data", self.data)]
        if self.truth is not None:
            out.append(("truth", self.truth))
        if self.target is not None:
            out.append(("target", self.target))
        return out


@dataclass
class PreprocessResult:
    store: Path
    status: str  # 'built' | 'replaced' | 'up-to-date'
    n_scans: int = 0
    n_planes: int = 0
    n_empty: int = 0
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0


# ----------------------------------------------------------------------------------------------
# Finding inputs


def _is_header_file(path: Path) -> bool:
    from badblock.io.keys import looks_like_interfile

    try:
        with open(path, "rb") as fh:
            return looks_like_interfile(fh.read(4096))
    except OSError:
        return False


def is_truth_name(path: Path) -> bool:
    return ".truth." in path.name or path.name.endswith(".truth")


def _folder_inputs(folder: Path, kind: str, headerless: bool) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    files = [p for p in files if not is_truth_name(p)]
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
                elif not is_truth_name(hit) and hit.suffix.lower() != ".json":
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


def truth_sibling(path: Path) -> Path | None:
    """``X.truth.hs`` for ``X.hs`` (also ``X.truth.s.hdr`` for ``X.s.hdr``), if it exists."""
    name = path.name
    stem, dot, rest = name.partition(".")
    candidates = [path.with_name(f"{stem}.truth.{rest}")] if dot else []
    candidates.append(path.with_name(f"{path.stem}.truth{path.suffix}"))
    candidates.append(path.with_name(f"{name}.truth"))
    for c in candidates:
        if c.exists() and c != path:
            return c
    return None


def scan_id(path: Path) -> str:
    return path.name.partition(".")[0] or path.name


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


def open_source(path: Path, kind: str, pre) -> Source:
    """Parse ``path``'s header (or the flat layout from ``pre``, a PreprocessConfig)."""
    from badblock.io import read_scan

    if path.suffix.lower() == ".npy":
        return _npy_source(path, kind)
    overrides = {}
    if not _is_header_file(path) and pre.shape:
        shape = list(pre.shape)
        if kind == "image" and len(shape) == 3:
            shape = [1, *shape]
        overrides = {"shape": shape, "dtype": pre.dtype, "byte_order": pre.byte_order,
                     "offset": pre.offset}
        if pre.tof_order != "auto":
            overrides["tof_order"] = pre.tof_order
    scan = read_scan(path, **overrides)
    h = scan.header
    del scan  # only the header is needed; the data are streamed with plain reads
    src = Source(path, Path(h.data_file), int(h.data_offset), np.dtype(h.dtype), tuple(h.shape),
                 h.format, view_major=bool(getattr(h, "view_major", False)),
                 segments=list(h.segments) if h.segments else None, tof_order=h.tof_order,
                 scanner=h.scanner, header_path=h.header_path)
    if src.format == "flat" and pre.tof_order != "auto":
        src.tof_order = pre.tof_order
    return src


# ----------------------------------------------------------------------------------------------
# Streaming


def _hash_small(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _read_exact(fh, view: memoryview, where: Path) -> None:
    got = 0
    n = len(view)
    while got < n:
        k = fh.readinto(view[got:])
        if not k:
            raise BadInputError(where, f"file ended early (short by {n - got} bytes): truncated "
                                       "while reading?")
        got += k


def _write_all(fh, view: memoryview) -> None:
    done = 0
    while done < len(view):
        done += fh.write(view[done:])


def _blocks(src: Source, chunk_bytes: int) -> list[tuple[int, int, int]]:
    """Streaming units as (first flat plane, n planes, view-major?): whole planes each.

    Plane-major files: chunks of whole planes. View-major files: one (TOF, segment) block
    each, since only a whole block is contiguous in the file.
    """
    t_n, p_n, v_n, b_n = src.shape
    plane = v_n * b_n * src.dtype.itemsize
    if src.view_major:
        sizes = [s.n_planes for s in src.segments] if src.segments else [p_n]
        out, start = [], 0
        for _ in range(t_n):
            for n in sizes:
                out.append((start, n, 1))
                start += n
        return out
    step = max(1, chunk_bytes // plane)
    total = t_n * p_n
    return [(i, min(step, total - i), 0) for i in range(0, total, step)]


class _Readahead:
    """Asks the kernel to fetch the next ``window`` bytes of a file while we compute.

    Chunks are small (cache-sized), so the kernel's own sequential readahead alone would keep
    only a little I/O in flight on a cold file; ``POSIX_FADV_WILLNEED`` starts reading a large
    window ahead without blocking and without the pages counting in this process's memory.
    On a file already in the page cache it costs one lookup per window.
    """

    def __init__(self, fd: int, window: int = READAHEAD_BYTES):
        self.fd = fd
        self.window = window
        self.upto = 0
        self.ok = hasattr(os, "posix_fadvise")
        if self.ok:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

    def at(self, pos: int) -> None:
        if self.ok and pos + self.window // 2 >= self.upto:
            start = max(pos, self.upto)
            os.posix_fadvise(self.fd, start, pos + self.window - start, os.POSIX_FADV_WILLNEED)
            self.upto = pos + self.window


class _Reader:
    """Consecutive byte ranges of one open file, as memoryviews of at most ``step`` bytes.

    The bulk is read through read-only memory maps of ``MAP_BYTES`` windows, populated in one
    call and dropped as soon as the caller lets go of its views: the bytes go from the page
    cache straight into the hash and the reductions, without the copy into a buffer that
    ``readinto`` makes (measured: 0.22 s instead of 0.29 s per 1.4 GB, one core). Only one or
    two windows are mapped at any time, so resident memory stays bounded. Where a file cannot
    be mapped (pipes, some network file systems) it falls back to ``readinto``.

    A file truncated by another process *while* it is mapped kills the process with SIGBUS
    (as it would the trainer, which maps the same raw file in reference mode); sizes are
    checked before streaming, and raw scans are not written to after acquisition.
    """

    def __init__(self, fh, size: int, where: Path, buf: bytearray, use_mmap: bool = True):
        self.fh = fh
        self.fd = fh.fileno()
        self.size = size
        self.where = where
        self.buf = buf
        self.ahead = _Readahead(self.fd)
        self.use_mmap = use_mmap

    def views(self, start: int, end: int, step: int):
        """Yield views covering ``[start, end)`` in order, each ``step`` bytes (the last may be
        shorter). The caller must drop each view (and arrays over it) before the next."""
        if end > self.size:
            raise BadInputError(self.where, f"file ended early (short by {end - self.size} "
                                            "bytes): truncated while reading?")
        if start >= end:
            return
        if self.use_mmap:
            self.done = start
            try:
                yield from self._mapped(start, end, step)
                return
            except (OSError, ValueError):
                self.use_mmap = False  # cannot map this file: read the rest into the buffer
                start = self.done
        yield from self._read(start, end, step)

    def _mapped(self, start: int, end: int, step: int):
        import mmap

        gran = mmap.ALLOCATIONGRANULARITY
        span = max(step, MAP_BYTES // step * step)
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        pos = start
        while pos < end:
            length = min(span, end - pos)
            base = pos - pos % gran
            self.ahead.at(pos + length)
            mapped = mmap.mmap(self.fd, length + pos - base, flags=flags, prot=mmap.PROT_READ,
                               offset=base)
            window = memoryview(mapped)[pos - base:]
            del mapped  # unmapped once the last view of this window is gone
            for i in range(0, length, step):
                yield window[i:i + step]
                self.done = pos + min(i + step, length)
            window.release()
            del window
            pos += length

    def _read(self, start: int, end: int, step: int):
        self.fh.seek(start)
        whole = memoryview(self.buf)
        pos = start
        while pos < end:
            n = min(step, end - pos)
            self.ahead.at(pos)
            view = whole[:n]
            _read_exact(self.fh, view, self.where)
            yield view
            pos += n


def stream_source(src: Source, dest: Path | None, *, chunk_bytes: int = CHUNK_BYTES,
                  on_bytes: Callable[[int], None] | None = None,
                  check_finite: bool = True, algorithm: str | None = None,
                  use_mmap: bool = True) -> tuple[PlaneStats, str, int]:
    """Read ``src`` once: checksum of the whole data file, per-plane statistics and (when
    ``dest`` is given) a ``.npy`` copy ``[TOF, plane, view, bin]`` of the data.

    Returns ``(stats, "<algorithm>:<hex>", file size in bytes)``; the algorithm is
    ``xxh3_128`` (see :data:`CHECKSUM`). Peak memory: one mapped window (``MAP_BYTES``) or
    one chunk, and for view-major files one (TOF, segment) block, plus the statistics.

    One thread does everything chunk by chunk: hash ~1 MiB of whole planes, reduce it, (copy
    mode) write it. A chunk that small stays in the CPU cache between the steps, so memory is
    crossed once instead of three or four times; measured on the 2-core machine this beat a
    reader thread + hash and write threads with 8 MiB chunks by 1.5-4x (the hand-offs cost
    more than the steps once the checksum runs at >10 GB/s).
    """
    t_n, p_n, v_n, b_n = src.shape
    plane_bytes = v_n * b_n * src.dtype.itemsize
    data_bytes = t_n * p_n * plane_bytes
    blocks = _blocks(src, chunk_bytes)
    step = max(n for _, n, _ in blocks) * plane_bytes
    buf = bytearray(max(step, 1 << 16))
    stats = PlaneStats(src.shape, src.dtype)
    name = algorithm or CHECKSUM
    hasher = new_hasher(name)
    update = hasher.update
    reduce = stats.update
    dtype = src.dtype
    out = None
    report = 0  # bytes not yet passed to on_bytes (a tqdm update costs microseconds)
    with open(src.data_file, "rb", buffering=0) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            reader = _Reader(fh, size, src.data_file, buf, use_mmap)
            if dest is not None:
                out = open(dest, "wb", buffering=0)
                header = npy_header(src.dtype, src.shape)
                _write_all(out, memoryview(header))
                flusher = _Writeback(out.fileno(), len(header))
            # The bytes before the data (an embedded header) count in the file's checksum.
            for view in reader.views(0, src.offset, len(buf)):
                update(view)
                del view
            end = src.offset + data_bytes
            if src.view_major:
                chunks = _view_major_chunks(reader, src, blocks, plane_bytes)
            else:
                chunks = reader.views(src.offset, end, step)
            for view in chunks:
                update(view)
                arr = np.frombuffer(view, dtype)
                n = arr.size // (v_n * b_n)
                if src.view_major:
                    planes = np.ascontiguousarray(arr.reshape(v_n, n, b_n).transpose(1, 0, 2))
                else:
                    planes = arr.reshape(n, v_n, b_n)
                reduce(planes)
                if check_finite and not stats.finite:
                    raise BadInputError(src.path, "contains NaN or infinite values")
                if out is not None:
                    _write_all(out, memoryview(planes.reshape(-1).view(np.uint8))
                               if src.view_major else view)
                    flusher.wrote(len(view))
                nbytes = len(view)
                del arr, planes, view
                if on_bytes:
                    report += nbytes
                    if report >= PROGRESS_BYTES:
                        on_bytes(report)
                        report = 0
            # Trailing bytes (e.g. randoms after prompts in an e7 file) count in the checksum.
            for view in reader.views(end, size, len(buf)):
                update(view)
                report += len(view)
                del view
            if on_bytes and report:
                on_bytes(report)
        finally:
            if out is not None:
                out.close()
    return stats, f"{name}:{hasher.hexdigest()}", size


class _Writeback:
    """Copy mode: starts the disk write of each ``WRITEBACK_BYTES`` of the copy as soon as it
    is written (``POSIX_FADV_DONTNEED`` on dirty pages starts their writeback without
    waiting, then drops them from the page cache once clean), so the disk works while the
    rest is hashed and reduced and the fsync before the store is published finds little left
    to do; the copy also does not push other files out of the page cache."""

    def __init__(self, fd: int, start: int):
        self.fd = fd
        self.start = start  # first byte not yet handed to writeback
        self.end = start
        self.ok = hasattr(os, "posix_fadvise")

    def wrote(self, n: int) -> None:
        self.end += n
        if self.ok and self.end - self.start >= WRITEBACK_BYTES:
            os.posix_fadvise(self.fd, self.start, self.end - self.start,
                             os.POSIX_FADV_DONTNEED)
            self.start = self.end


def _view_major_chunks(reader: _Reader, src: Source, blocks, plane_bytes: int):
    """View-major files: one whole (TOF, segment) block ``[view, n, bin]`` per view."""
    pos = src.offset
    for _, n, _ in blocks:
        nbytes = n * plane_bytes
        yield from reader.views(pos, pos + nbytes, nbytes)
        pos += nbytes


def new_hasher(algorithm: str = CHECKSUM):
    """A hash object for ``algorithm``: ``xxh3_128`` (the xxhash package) or any hashlib name."""
    if algorithm == "xxh3_128":
        try:
            import xxhash
        except ImportError:
            raise BadInputError("xxhash", "the xxh3_128 checksum needs the 'xxhash' package "
                                          "(pip install -r requirements.txt)") from None
        return xxhash.xxh3_128()
    try:
        return hashlib.new(algorithm)
    except ValueError:
        raise BadInputError(algorithm, "unknown checksum algorithm") from None


def checksum_file(path: Path, algorithm: str = CHECKSUM, chunk_bytes: int = CHUNK_BYTES) -> str:
    """``<algorithm>:<hex>`` of a whole file, read in fixed-size chunks."""
    hasher = new_hasher(algorithm)
    buf = bytearray(chunk_bytes)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        ahead = _Readahead(fh.fileno())
        pos = 0
        while True:
            ahead.at(pos)
            k = fh.readinto(view)
            if not k:
                break
            hasher.update(view[:k])
            pos += k
    del view
    return f"{algorithm}:{hasher.hexdigest()}"


# ----------------------------------------------------------------------------------------------
# The stage


def _load_mask(path: Path, shape) -> np.ndarray:
    try:
        mask = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise BadInputError(path, "mask file not found") from None
    except (ValueError, OSError) as exc:
        raise BadInputError(path, f"not a readable .npy mask ({exc})") from None
    want = tuple(shape[1:])
    if mask.shape != want:
        raise BadInputError(path, f"mask shape {list(mask.shape)} does not match the scans' "
                                  f"[plane, view, bin] {list(want)}")
    mask = mask.astype(np.float32)
    if not np.all(np.isfinite(mask)) or mask.min() < 0 or mask.max() > 1:
        raise BadInputError(path, "mask values must be fractions in 0..1")
    return mask


def _choose_split(ids: list[str], pre, seed: int) -> tuple[list[str], str]:
    if pre.val_scans:
        unknown = [v for v in pre.val_scans if v not in ids]
        if unknown:
            raise BadInputError("preprocess.val_scans", f"no scan named {', '.join(unknown)} "
                                                        f"(scans: {', '.join(ids)})")
        return sorted(set(pre.val_scans)), "explicit preprocess.val_scans"
    if not 0 <= pre.val_fraction < 1:
        raise BadInputError("preprocess.val_fraction", "must be in [0, 1)")
    n = len(ids)
    n_val = int(round(pre.val_fraction * n))
    if pre.val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    if n_val == 0:  # nothing to draw (and numpy.random need not be imported)
        return [], f"0 of {n} whole scans (val_fraction {pre.val_fraction})"
    order = np.random.default_rng(seed).permutation(n)
    ids_sorted = sorted(ids)
    val = sorted(ids_sorted[i] for i in order[:n_val])
    return val, f"{n_val} of {n} whole scans by run.seed={seed} (val_fraction {pre.val_fraction})"


def _scanner_layout(src: Source, scanner_name: str | None):
    """Segments / TOF order / scanner name, from the header or from a matching preset."""
    segments, tof_order, scanner = src.segments, src.tof_order, src.scanner
    if scanner_name and (segments is None or scanner is None):
        try:
            from badblock.physics import get_scanner

            preset = get_scanner(scanner_name)
        except (ImportError, BadInputError):
            preset = None
        if preset is not None and tuple(preset.shape) == tuple(src.shape):
            scanner = scanner or preset.name
            segments = segments or list(preset.segments)
            if src.format in ("flat", "npy"):
                tof_order = preset.tof_order
    return segments, tof_order, scanner


def gather(cfg) -> tuple[list[ScanInputs], np.ndarray | None, Path | None]:
    """Resolve and open every input (headers only), checking shapes before any data is read."""
    pre = cfg.preprocess
    headerless = bool(pre.shape)
    if not pre.inputs:
        raise BadInputError("preprocess.inputs", "no inputs given (badblock preprocess INPUT...)")
    paths = resolve_inputs(pre.inputs, cfg.run.data, pre.kind, headerless)
    targets: list[Path] = []
    if pre.kind == "paired":
        if not pre.targets:
            raise BadInputError("preprocess.targets", "kind 'paired' needs --targets (one target "
                                                      "scan per input, same order)")
        targets = resolve_inputs(pre.targets, cfg.run.data, pre.kind, headerless, "target")
        if len(targets) != len(paths):
            raise BadInputError("preprocess.targets", f"{len(paths)} inputs but {len(targets)} "
                                                      "targets (one target per input)")
    elif pre.targets:
        raise BadInputError("preprocess.targets", "targets are for kind 'paired' only")
    scans: list[ScanInputs] = []
    used: dict[str, int] = {}
    for i, path in enumerate(paths):
        src = open_source(path, pre.kind, pre)
        sid = scan_id(path)
        if sid in used:
            used[sid] += 1
            sid = f"{sid}-{used[sid]}"
        used.setdefault(sid, 1)
        item = ScanInputs(sid, src)
        if pre.kind != "paired":
            tpath = truth_sibling(path)
            if tpath is not None:
                truth = open_source(tpath, pre.kind, _truth_pre(pre))
                if truth.shape != src.shape:
                    raise BadInputError(tpath, f"truth shape {list(truth.shape)} differs from "
                                               f"its scan's {list(src.shape)}")
                if truth.dtype.kind != "f" or truth.dtype.itemsize != 4:
                    raise BadInputError(tpath, f"truth must be float32, not {truth.dtype.name}")
                item.truth = truth
        else:
            target = open_source(targets[i], pre.kind, pre)
            if target.shape != src.shape:
                raise BadInputError(targets[i], f"target shape {list(target.shape)} differs "
                                                f"from its input's {list(src.shape)}")
            item.target = target
        scans.append(item)
    first = scans[0].data
    for item in scans[1:]:
        if item.data.shape != first.shape:
            raise BadInputError(item.data.path, f"shape {list(item.data.shape)} differs from "
                                                f"{first.path.name}'s {list(first.shape)} "
                                                "(one store holds scans of one shape)")
    mask_path = None
    mask = None
    if cfg.scanner.mask:
        mask_path = cfg.data_path(cfg.scanner.mask)
        mask = _load_mask(mask_path, first.shape)
    return scans, mask, mask_path


def _truth_pre(pre):
    """Flat-file layout of a headerless truth sibling: the scan's shape, float32."""
    import dataclasses

    return dataclasses.replace(pre, dtype="float32") if pre.shape else pre


def _check_outputs(store: Path, scans: list[ScanInputs], mask_path: Path | None) -> None:
    out = store.resolve()
    files = [src.path for s in scans for _, src in s.roles()]
    files += [src.data_file for s in scans for _, src in s.roles()]
    if mask_path is not None:
        files.append(mask_path)
    for f in files:
        r = Path(f).resolve()
        if r == out or out in r.parents:
            raise BadInputError(store, f"output would overwrite the input {f}")


def _settings(cfg, mask_path, mask_sum) -> dict:
    pre = cfg.preprocess
    out = {k: getattr(pre, k) for k in SETTINGS_KEYS}
    out["seed"] = cfg.run.seed
    out["scanner"] = cfg.scanner.name
    out["mask"] = None if mask_path is None else mask_sum
    return out


def _same_inputs(old: dict, new_sources: list[tuple[str, str, Source]],
                 settings: dict) -> dict[int, int] | None:
    """Does an existing store's fingerprint match these inputs and settings?

    Paths, sizes and settings must match; a file whose modification time changed is
    re-hashed (read-only pass, with the algorithm the store recorded) and must have the
    recorded checksum. Returns None when something differs, else ``{input row: new
    mtime_ns}`` for the files that were touched but hold the same bytes (empty if none).
    """
    if not old or old.get("settings") != settings:
        return None
    rows = old.get("inputs", [])
    if len(rows) != len(new_sources):
        return None
    touched: dict[int, int] = {}
    for i, (row, (sid, role, src)) in enumerate(zip(rows, new_sources)):
        fp = src.fingerprint()
        if (row.get("id"), row.get("role")) != (sid, role):
            return None
        for key in ("path", "data_file", "size", "header_sha256"):
            if row.get(key) != fp.get(key):
                return None
        if row.get("mtime_ns") != fp["mtime_ns"]:
            recorded = str(row.get("checksum", ""))
            algorithm = recorded.partition(":")[0] or CHECKSUM
            if recorded != checksum_file(src.data_file, algorithm):
                return None
            touched[i] = fp["mtime_ns"]
    return touched


def _refresh_times(store_path: Path, manifest: dict, touched: dict[int, int]) -> None:
    """Record the new modification times of raw files that were touched but not changed, so
    that the reader's size + time check accepts them again (manifest rewritten atomically)."""
    from badblock.data.store import manifest_json
    from badblock.utils.atomic import atomic_write_text

    rows = manifest["fingerprint"]["inputs"]
    for i, mtime in touched.items():
        rows[i]["mtime_ns"] = mtime
        for scan in manifest["scans"]:
            ent = scan.get(rows[i]["role"]) if scan.get("id") == rows[i]["id"] else None
            if isinstance(ent, dict) and isinstance(ent.get("source"), dict):
                ent["source"]["mtime_ns"] = mtime
    atomic_write_text(store_path / MANIFEST, manifest_json(manifest))


def preprocess(cfg, *, force: bool = False) -> PreprocessResult:
    """Build (or confirm) the store ``run.output / preprocess.store`` from ``preprocess.inputs``.

    Idempotent: a complete store built from the same inputs (paths, sizes, checksums) and
    settings is left alone (status ``'up-to-date'``); a different one is replaced only with
    ``force`` and only once the new store is complete. Raises :class:`BadInputError` on bad
    input, leaving nothing behind.
    """
    from badblock.config import save_resolved, to_dict

    t0 = time.perf_counter()
    pre = cfg.preprocess
    store_path = cfg.output_path(pre.store)
    scans, mask, mask_path = gather(cfg)
    _check_outputs(store_path, scans, mask_path)
    mask_sum = _hash_small(mask_path) if mask_path is not None else None
    settings = _settings(cfg, mask_path, mask_sum)
    sources = [(s.id, role, src) for s in scans for role, src in s.roles()]

    status = "built"
    if store_path.exists():
        try:
            old = Store.open(store_path, check_sources=False).manifest
        except BadInputError:
            old = None
        touched = None if old is None else _same_inputs(old.get("fingerprint", {}), sources,
                                                        settings)
        if touched is not None:
            m = old
            if touched:
                _refresh_times(store_path, m, touched)
            return PreprocessResult(
                store_path, "up-to-date", len(m["scans"]),
                len(m["scans"]) * int(m.get("n_planes_per_scan", 0)),
                sum(s["data"]["n_empty"] for s in m["scans"]), m["split"]["train"],
                m["split"]["val"], 0, time.perf_counter() - t0)
        if not force:
            what = ("a store built from other inputs or settings" if old is not None
                    else "not a complete store")
            raise BadInputError(store_path, f"exists and is {what}; use --force to replace it")
        status = "replaced"

    ids = [s.id for s in scans]
    val, rule = _choose_split(ids, pre, cfg.run.seed)
    first = scans[0].data
    segments, tof_order, scanner = _scanner_layout(first, cfg.scanner.name)
    for s in scans[1:]:
        seg2, tof2, _ = _scanner_layout(s.data, cfg.scanner.name)
        if (seg2 or None) != (segments or None) or tof2 != tof_order:
            raise BadInputError(s.data.path, "segment or TOF layout differs from "
                                             f"{first.path.name}'s (one store, one layout)")
    total = sum(src.data_file.stat().st_size for _, _, src in sources)
    created = _first_missing(store_path.parent)
    fingerprint_rows: list[dict] = []
    read = 0
    try:
        with StoreWriter.create(store_path, pre.kind, force=force, segments=segments,
                                tof_order=tof_order, scanner=scanner, mask=mask,
                                mask_source=None if mask_path is None else
                                {"path": os.fspath(mask_path.resolve()), "checksum":
                                 f"sha256:{mask_sum}"},
                                config=to_dict(cfg)) as w, \
                _progress_bar(total) as bar:
            for sid, role, src in sources:
                fp = src.fingerprint()
                # View-major files have no [TOF, plane, view, bin] strides: always copied.
                copy = pre.copy or src.view_major
                dest = w.data_path(sid, role) if copy else None
                stats, checksum, size = stream_source(src, dest, on_bytes=bar.update)
                read += size
                fp.update({"id": sid, "role": role, "checksum": checksum})
                fingerprint_rows.append(fp)
                source = {"path": fp["path"], "data_file": fp["data_file"],
                          "format": src.format, "size": size, "mtime_ns": fp["mtime_ns"],
                          "checksum": checksum,
                          "header": None if src.header_path is None else
                          os.fspath(src.header_path.resolve())}
                if dest is not None:
                    w.add_array(sid, role, stats, file=dest,
                                offset=len(npy_header(src.dtype, src.shape)), dtype=src.dtype,
                                source=source)
                else:
                    w.add_array(sid, role, stats, file=src.data_file, offset=src.offset,
                                dtype=src.dtype, in_place=True, source=source)
            w.set_split(val, seed=cfg.run.seed, rule=rule)
            w.extra["fingerprint"] = {"checksum": CHECKSUM, "settings": settings,
                                      "inputs": fingerprint_rows}
            w.extra["storage"] = "copy" if pre.copy else "reference"
            save_resolved(cfg, w.folder)
            manifest = w.manifest()
    except BaseException:
        if created is not None:
            _remove_empty_dirs(store_path.parent, created)
        raise
    n_planes = int(np.prod(first.shape[:2])) * len(scans)
    return PreprocessResult(store_path, status, len(scans), n_planes,
                            sum(s["data"]["n_empty"] for s in manifest["scans"]),
                            manifest["split"]["train"], manifest["split"]["val"], read,
                            time.perf_counter() - t0)


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _progress_bar(total: int):
    """The byte progress bar; when bars are off (``BADBLOCK_PROGRESS=0``, or stderr not a
    terminal: the rule of :func:`badblock.utils.progress.progress`) tqdm is not even
    imported, which is 30-45 ms of the start-up that the benchmark against ``cp`` counts."""
    import sys

    flag = os.environ.get("BADBLOCK_PROGRESS")
    if (not sys.stderr.isatty()) if flag is None else flag == "0":
        return _NoBar()
    from badblock.utils.progress import progress

    return progress(total=total, desc="preprocess", unit="B", unit_scale=True,
                    unit_divisor=1024)


def _first_missing(folder: Path) -> Path | None:
    """The outermost ancestor of ``folder`` (or itself) that does not exist yet."""
    folder = Path(folder).absolute()
    missing = None
    while not folder.exists():
        missing = folder
        folder = folder.parent
    return missing


def _remove_empty_dirs(folder: Path, stop: Path) -> None:
    """Undo the output folders this run created (up to ``stop``), if they stayed empty."""
    folder = Path(folder).absolute()
    stop = Path(stop).absolute()
    while folder.is_dir() and not any(folder.iterdir()):
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == stop:
            return
        folder = folder.parent


__all__ = ["preprocess", "PreprocessResult", "resolve_inputs", "open_source", "stream_source",
           "truth_sibling", "checksum_file", "Source", "CHECKSUM", "MANIFEST"]
