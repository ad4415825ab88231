"""Repair whole damaged scans with a trained network and write them in their own format.

Only planes the mask touches go through the network; every other plane, and every bin of a
repaired plane with f = 0, is copied from the input unchanged (data consistency). Planes are
streamed in batches of context stacks (:func:`badblock.physics.stack.plane_stack`), so memory does
not grow with the scan, and written into a memory-mapped output that becomes visible (data and
header) only when complete (:func:`badblock.io.open_scan_writer`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from badblock.errors import BadInputError
from badblock.physics.mask import ResolvedMask
from badblock.utils.progress import progress

# Bytes of input copied per step when streaming untouched planes to the output.
COPY_CHUNK_BYTES = 64 << 20
SUMMARY_NAME = "repair_summary.json"
# File names that say "this is a scan file" when -o names a single output.
SCAN_SUFFIXES = (".hs", ".hdr", ".s", ".v", ".raw", ".bin", ".dat", ".sino")


def check_mask(mask: np.ndarray, shape: Sequence[int], where: str | os.PathLike) -> np.ndarray:
    """``mask`` as float32 ``[plane, view, bin]``, checked against a scan's ``[T, P, V, B]``."""
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 3 or tuple(mask.shape) != tuple(shape[1:]):
        raise BadInputError(where, f"mask [plane, view, bin] {tuple(mask.shape)} does not match "
                                   f"the scan's {tuple(shape[1:])} (wrong scanner or mask?)")
    return mask


def finite_prediction(value: np.ndarray, damaged: np.ndarray, t: int, p: int,
                      predictor) -> np.ndarray:
    """The prediction ``value`` ``[view, bin]`` of TOF bin ``t``, plane ``p``, checked: a NaN or
    inf where ``damaged`` (f > 0) raises :class:`BadInputError` naming the checkpoint (NaN
    weights or a flipped bit that loading cannot see), so that a broken network never passes
    the damaged input off as repaired; elsewhere (bins that keep the input) it becomes 0."""
    bad = ~np.isfinite(value)
    if not bad.any():
        return value
    hit = int((bad & damaged).sum())
    if hit:
        raise BadInputError(getattr(predictor, "path", "predictor"),
                            f"the network predicts NaN or inf for {hit} of the "
                            f"{int(damaged.sum())} damaged bins of TOF bin {t}, plane {p}: a "
                            "broken checkpoint (NaN weights, a flipped bit?); nothing written")
    return np.where(bad, 0, value)


def check_checkpoint(predictor, header, where: str | os.PathLike) -> None:
    """Refuse a scan the predictor's checkpoint was not trained for: another scanner preset
    (its ``data`` dict's ``scanner``) than the scan's header names, or another ``[plane, view,
    bin]`` than that preset's, or another number of views or bins than training saw."""
    from badblock.physics.scanners import PRESETS

    data = getattr(predictor, "data", None) or {}
    name, shape = data.get("scanner"), tuple(header.shape[1:])
    ckpt = getattr(predictor, "path", "the checkpoint")
    theirs = f"{list(shape)}" + (f" ({header.scanner})" if header.scanner else "")
    if name in PRESETS:
        want = tuple(PRESETS[name].shape[1:])
        if (header.scanner in PRESETS and header.scanner != name) or want != shape:
            raise BadInputError(where, f"{ckpt} was trained on {name} scans ([plane, view, bin] "
                                       f"= {list(want)}), this scan is {theirs}: repair it with "
                                       "a checkpoint of its scanner")
    views, bins = data.get("views"), data.get("bins")
    if views and bins and (int(views), int(bins)) != shape[1:]:
        raise BadInputError(where, f"{ckpt} was trained on {views} views x {bins} bins, this "
                                   f"scan has [plane, view, bin] = {theirs}: repair it with a "
                                   "checkpoint of its scanner")


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _same(a: Path, b: Path | None) -> bool:
    if b is None or not a.exists() or not b.exists():
        return False
    return os.path.samefile(a, b)


def check_output(scan, out_path: str | os.PathLike, force: bool) -> None:
    """Refuse writing over the input (always) or over an existing output (unless ``force``)."""
    from badblock.io import output_paths

    for out in output_paths(out_path, scan.header.format):
        for src in (scan.header.data_file, scan.header.header_path, Path(scan.path)):
            if _same(out, src):
                raise BadInputError(out, "is the input scan; refusing to write over it, even with "
                                         "--force (choose another output)")
        if out.exists() and not force:
            raise BadInputError(out, "already exists (refusing to overwrite; use --force)")


def _cached(cache: dict, key: int, limit: int, make):
    """``cache[key]``, made with ``make(key)`` on a miss; emptied past ``limit`` entries so
    memory stays bounded."""
    if key not in cache:
        if len(cache) > limit:
            cache.clear()
        cache[key] = make(key)
    return cache[key]


def _sensitivity(predictor, shape) -> np.ndarray:
    """Real LORs per bin ``[1, plane, view, bin]`` of the predictor's scanner (per-LOR networks
    need them), checked against the scan's shape."""
    from badblock.physics.mask import real_lor_count
    from badblock.physics.scanners import get_scanner

    name = (getattr(predictor, "data", None) or {}).get("scanner")
    if not name:
        raise BadInputError("checkpoint", "a per-LOR network without its scanner recorded")
    scanner = get_scanner(name)
    if tuple(scanner.shape[1:]) != tuple(shape[1:]):
        raise BadInputError("checkpoint", f"trained for scanner {name} {list(scanner.shape[1:])}, "
                                          f"the scan is [plane, view, bin] {list(shape[1:])}")
    return real_lor_count(scanner)[None]


def repair_scan(scan, mask: np.ndarray, predictor: Callable, out_path: str | os.PathLike, *,
                context: int | None = None, views_to: int | None = None,
                mask_channel: bool | None = None, batch_size: int = 32, force: bool = False,
                all_planes: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Repair ``scan`` (a :class:`badblock.io.Scan`) and write it to ``out_path``.

    ``mask``: float ``[plane, view, bin]`` fraction of LORs lost, the same for all TOF bins.
    ``predictor``: callable ``(stacks [N, 2k+1, Vw, B], masks [N, 2k+1, Vw, B] | None
    [, sensitivity stacks alike when its ``per_lor``]) -> [N, Vp, B]`` counts (numpy or torch),
    e.g. :class:`badblock.inference.Predictor`, with ``Vw = Vp + 2 predictor.margin``;
    ``context`` (k), ``views_to`` (Vp; 0 = the next multiple of ``predictor.multiple``) and
    ``mask_channel`` default to the predictor's attributes. Each TOF bin of each plane with
    f > 0 anywhere is predicted (``all_planes`` sends every plane: the naive way, for
    benchmarks); in those planes bins with f > 0 take the prediction, the others keep the
    input. Integer outputs are rounded and clipped to the dtype's range. Returns a summary dict
    (also what ``badblock repair`` writes as JSON).
    """
    from badblock.io import open_scan_writer
    from badblock.physics.stack import mask_stack, padded_views, plane_stack, view_padding

    log = log or (lambda _msg: None)
    t0 = time.perf_counter()
    header = scan.header
    n_tof, n_planes, n_views, n_bins = header.shape
    mask = check_mask(mask, header.shape, "mask")
    context = int(getattr(predictor, "context", 2) if context is None else context)
    if mask_channel is None:
        mask_channel = bool(getattr(predictor, "mask_channel", False))
    if views_to is None:
        views_to = int(getattr(predictor, "views_to", 0) or 0)
    if not views_to:
        views_to = padded_views(n_views, int(getattr(predictor, "multiple", 1) or 1))
    if views_to < n_views:
        raise BadInputError("repair", f"the network pads views to {views_to}, fewer than the "
                                      f"scan's {n_views} views (a checkpoint for another scanner?)")
    before, _ = view_padding(n_views, views_to)
    margin = int(getattr(predictor, "margin", 0) or 0)
    wide = views_to + 2 * margin  # the prior channel reads margin views beyond the network's
    sens = _sensitivity(predictor, header.shape) if getattr(predictor, "per_lor", False) else None
    if batch_size < 1:
        raise BadInputError("repair.batch_size", f"must be >= 1, not {batch_size}")
    check_output(scan, out_path, force)

    touched = (mask > 0).any(axis=(1, 2))
    planes = np.arange(n_planes) if all_planes else np.flatnonzero(touched)
    segments = header.segments
    tof_order = header.tof_order if n_tof > 1 else "none"
    out_dtype = header.dtype
    is_int = out_dtype.kind in "iu"
    lo, hi = (np.iinfo(out_dtype).min, np.iinfo(out_dtype).max) if is_int else (None, None)
    clipped_low = clipped_high = 0
    items = [(t, int(p)) for t in range(n_tof) for p in planes]
    mask_cache: dict[int, np.ndarray] = {}
    sens_cache: dict[int, np.ndarray] = {}

    with open_scan_writer(out_path, header, force=force) as writer:
        step = max(1, COPY_CHUNK_BYTES // max(1, n_views * n_bins * out_dtype.itemsize))
        for t in range(n_tof):
            for p0 in range(0, n_planes, step):
                writer.data[t, p0:p0 + step] = scan.data[t, p0:p0 + step]
        batches = range(0, len(items), batch_size)
        for b0 in progress(batches, total=len(batches), desc="repair", unit="batch"):
            batch = items[b0:b0 + batch_size]
            stacks = np.stack([plane_stack(scan.data, t, p, context, segments, tof_order,
                                           wide) for t, p in batch])
            masks = senses = None
            if mask_channel:
                masks = np.stack([_cached(mask_cache, p, 4 * batch_size, lambda q: mask_stack(
                    mask, q, context, segments, wide)) for _, p in batch])
            if sens is not None:
                senses = np.stack([_cached(sens_cache, p, 4 * batch_size, lambda q: plane_stack(
                    sens, 0, q, context, segments, "none", wide)) for _, p in batch])
            pred = _to_numpy(predictor(stacks, masks, senses) if sens is not None
                             else predictor(stacks, masks))
            if pred.shape != (len(batch), views_to, n_bins):
                raise BadInputError("predictor", f"returned shape {pred.shape}, expected "
                                                 f"{(len(batch), views_to, n_bins)}")
            pred = pred[:, before:before + n_views]
            for i, (t, p) in enumerate(batch):
                original = np.asarray(scan.data[t, p])
                value = finite_prediction(pred[i], mask[p] > 0, t, p, predictor)
                if is_int:
                    value = np.rint(value)
                    damaged = mask[p] > 0
                    clipped_low += int(((value < lo) & damaged).sum())
                    clipped_high += int(((value > hi) & damaged).sum())
                    value = np.clip(value, lo, hi)
                writer.data[t, p] = np.where(mask[p] > 0, value, original).astype(out_dtype)
        written = Path(writer.path)
    seconds = time.perf_counter() - t0
    clipped = clipped_low + clipped_high
    if is_int:
        log(f"{written.name}: predictions rounded to {out_dtype.name} and clipped to "
            f"[{lo}, {hi}]: {clipped} bins clipped ({clipped_low} below, {clipped_high} above)")
    n_repaired = len(planes)
    return {
        "input": str(scan.path),
        "output": str(written),
        "format": header.format,
        "shape": list(header.shape),
        "dtype": out_dtype.str,
        "planes": n_planes,
        "planes_repaired": int(n_repaired),
        "planes_copied": int(n_planes - n_repaired),
        "tof_bins": n_tof,
        "plane_images_predicted": len(items),
        "bins_replaced": int((mask > 0).sum()) * n_tof,
        "bins_clipped": clipped,
        "bins_clipped_low": clipped_low,
        "bins_clipped_high": clipped_high,
        "context": context,
        "views_to": views_to,
        "mask_channel": bool(mask_channel),
        "batch_size": batch_size,
        "all_planes": bool(all_planes),
        "seconds": round(seconds, 3),
        "plane_images_per_s": round(len(items) / seconds, 2) if seconds > 0 else None,
    }


def output_for(inp: str | os.PathLike, out: str | os.PathLike, n_inputs: int) -> Path:
    """Where the repair of ``inp`` goes: ``out`` itself when it names one scan file (a single
    input and a scan-like suffix, not an existing folder), else ``out/<input file name>``."""
    inp, out = Path(inp), Path(out)
    if n_inputs == 1 and not out.is_dir() and out.suffix.lower() in SCAN_SUFFIXES:
        return out
    return out / inp.name


def mask_report(scan, mask, declared: ResolvedMask | None = None) -> dict:
    """The ``mask`` ``[plane, view, bin]`` checked against the damaged ``scan`` (a
    :func:`badblock.io.read_scan` scan) before it is used on it
    (:func:`badblock.physics.detect.check_scan_mask`): a contradiction is a
    :class:`BadInputError` naming the scan. ``declared``: how the mask was given (a file, or
    the scanner and dead blocks it was computed from, which are then verified one by one)."""
    from badblock.physics.detect import check_scan_mask

    d = declared or ResolvedMask(np.asarray(mask))
    return check_scan_mask(
        scan.data, np.asarray(mask, np.float32), d.scanner or scan.header.scanner,
        blocks=d.blocks if d.scanner else None, crystals=d.crystals if d.scanner else None,
        where=str(scan.path), what=d.describe() if (d.path or d.scanner) else "the mask")


def repair_files(inputs: Sequence[str | os.PathLike], mask, predictor: Callable,
                 out: str | os.PathLike, *, batch_size: int = 32, force: bool = False,
                 all_planes: bool = False, mask_check: bool = True,
                 unchecked_why: str = "switched off (--no-mask-check)",
                 declared: ResolvedMask | None = None,
                 log: Callable[[str], None] | None = None) -> list[dict]:
    """:func:`repair_scan` for each input file (outputs per :func:`output_for`).

    ``mask``: one ``[plane, view, bin]`` mask for every input, or a list of one per input.
    Every input is checked before the first is written: its mask's shape, the checkpoint's
    scanner (:func:`check_checkpoint`), finite values (float scans), its output path, and
    with ``mask_check`` the mask against the scan's counts (:func:`mask_report`; ``declared``
    says what the mask was made of, when known). Temporaries that killed repairs left beside
    the outputs are removed. Each summary's ``mask_check`` holds the check's report (or, without
    ``mask_check``, ``unchecked_why``).
    """
    from badblock.io import check_finite, output_paths, read_scan
    from badblock.utils.atomic import clean_orphans

    if not inputs:
        raise BadInputError("repair", "no input scans given")
    masks = list(mask) if isinstance(mask, (list, tuple)) else [mask] * len(inputs)
    if len(masks) != len(inputs):
        raise BadInputError("mask", f"{len(masks)} masks for {len(inputs)} scans")
    scans, targets, reports = [], [], []
    for inp, m in zip(inputs, masks):
        scan = read_scan(inp)
        check_mask(m, scan.header.shape, inp)
        check_checkpoint(predictor, scan.header, inp)
        target = output_for(inp, out, len(inputs))
        check_output(scan, target, force)
        check_finite(scan)
        scans.append(scan)
        targets.append(target)
    if len(set(map(str, targets))) != len(targets):
        raise BadInputError(out, "two inputs have the same file name; repair them into "
                                 "separate folders")
    for scan, m in zip(scans, masks):
        reports.append(mask_report(scan, m, declared) if mask_check else
                       {"checked": False, "why": unchecked_why})
    for target in targets:
        clean_orphans(target.parent, [p.name for p in output_paths(target, "flat")
                                      + output_paths(target, "interfile")
                                      + output_paths(target, "e7")])
    summaries = []
    for scan, m, target, report in zip(scans, masks, targets, reports):
        summary = repair_scan(scan, m, predictor, target, batch_size=batch_size, force=force,
                              all_planes=all_planes, log=log)
        summaries.append({**summary, "mask_check": report})
    return summaries
