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

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from badblock.data.sources import Source, mask_reports, open_source, resolve_inputs, sha256_small
from badblock.data.store import MANIFEST, Store
from badblock.data.store_writer import StoreWriter, npy_header
from badblock.data.stream import CHECKSUM, checksum_file, stream_source
from badblock.errors import BadInputError
from badblock.io.naming import scan_id, truth_sibling

# The settings that make two stores built from the same files differ (idempotence check).
SETTINGS_KEYS = ("kind", "shape", "dtype", "byte_order", "offset", "copy", "val_fraction",
                 "val_scans", "tof_order")


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
    mask_check: list[dict] = field(default_factory=list)  # per paired input, when masked


# ----------------------------------------------------------------------------------------------
# The stage


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
        from badblock.physics.mask import load_mask  # only when there is a mask: start-up

        mask = load_mask(mask_path, shape=first.shape)
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
    from badblock.data.store_writer import manifest_json
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
    mask_sum = sha256_small(mask_path) if mask_path is not None else None
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

    checks = [] if mask is None else mask_reports(scans, mask, mask_path, pre,
                                                  cfg.scanner.mask_check)
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
            if checks:
                w.extra["mask_check"] = checks
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
                            time.perf_counter() - t0, checks)


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
