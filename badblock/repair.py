"""Repair whole damaged scans with a trained network and write them in their own format.

Only planes the mask touches go through the network; every other plane, and every bin of a
repaired plane with f = 0, is copied from the input unchanged (data consistency). Planes are
streamed in batches of context stacks (:func:`badblock.physics.stack.plane_stack`), so memory does
not grow with the scan, and written into a memory-mapped output that becomes visible (data and
header) only when complete (:func:`badblock.io.open_scan_writer`).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from badblock.errors import BadInputError
from badblock.physics.mask import ResolvedMask
from badblock.utils.progress import progress

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


def scan_fill_for(predictor, scan, mask: np.ndarray, mu: np.ndarray | None) -> np.ndarray | None:
    """The model-based fill of ``scan`` a fill-prior network takes (None for other networks):
    :func:`badblock.baselines.scan_fill` with the OSEM settings its checkpoint recorded, on
    its scanner; ``mu``: the scan's attenuation map on the scanner's grid (needed when the
    training fills modelled attenuation, refused when they did not: the fill must be made as
    the network learnt it)."""
    from badblock.baselines import scan_fill
    from badblock.physics.scanners import get_scanner

    settings = _fill_settings_for(predictor, scan, mu)
    if settings is None:
        return None
    return scan_fill(np.asarray(scan.data), mask, get_scanner(predictor.data["scanner"]),
                     settings, mu=mu, tof_order=scan.header.tof_order)


def _fill_settings_for(predictor, scan, mu) -> dict | None:
    """The fill settings of a fill-prior predictor (None for other networks), checked against
    the attenuation map given for ``scan``."""
    from badblock.io.naming import scan_id

    layout = getattr(predictor, "layout", None)
    if not getattr(layout, "fill_prior", False):
        return None
    settings = (getattr(predictor, "data", None) or {}).get("fill")
    if not settings:
        raise BadInputError("checkpoint", "a fill-prior network without its fill settings")
    if settings.get("attenuation") and mu is None:
        raise BadInputError(scan.path, "this network was trained on fills that model "
                            "attenuation: give the scan's attenuation map (--mu, or "
                            f"{scan_id(Path(scan.path))}.mu.npy beside the scan)")
    if not settings.get("attenuation") and mu is not None:
        raise BadInputError(scan.path, "this network was trained on fills without attenuation: "
                                       "repair it without --mu")
    return settings


def repair_scan(scan, mask: np.ndarray, predictor: Callable, out_path: str | os.PathLike, *,
                context: int | None = None, views_to: int | None = None,
                mask_channel: bool | None = None, batch_size: int = 32, force: bool = False,
                all_planes: bool = False, log: Callable[[str], None] | None = None,
                workers: int | None = None, overlap: bool = True,
                mu: np.ndarray | None = None, fill: np.ndarray | None = None,
                self_check: bool | None = None, damage: tuple | None = None) -> dict:
    """Repair ``scan`` (a :class:`badblock.io.Scan`) and write it to ``out_path``.

    ``mask``: float ``[plane, view, bin]`` fraction of LORs lost, the same for all TOF bins.
    ``predictor``: callable ``(stacks [N, 2k+1, Vw, B], masks [N, 2k+1, Vw, B] | None
    [, sensitivity stacks alike when its ``per_lor``]) -> [N, Vp, B]`` counts (numpy or torch),
    e.g. :class:`badblock.inference.Predictor`, with ``Vw = Vp + 2 predictor.margin``;
    ``context`` (k), ``views_to`` (Vp; 0 = the next multiple of ``predictor.multiple``) and
    ``mask_channel`` default to the predictor's attributes. Each TOF bin of each plane with
    f > 0 anywhere is predicted (``all_planes`` sends every plane: the naive way, for
    benchmarks); in those planes bins with f > 0 take the prediction, the others keep the
    input. Integer outputs are rounded and clipped to the dtype's range. A plane whose context
    stack holds no counts at all is copied, not predicted, for predictors that normalise by the
    stack's ``max`` or ``mean`` (their prediction for it rounds to 0).

    How it runs (:mod:`badblock.inference.engine`): ``batch_size`` images per network call at
    most (fewer where the predictor's activations would exceed the engine's per-call memory),
    ``workers`` processes (None = one per CPU core for a CPU predictor, else 1), ``overlap``:
    stacking and merging in threads beside the network in a single process. Every choice
    writes the same bytes. ``mu``: the scan's attenuation map, for a network that takes the
    model-based fill (:func:`scan_fill_for`, made here from the damaged scan); ``fill``: that
    fill when the caller already made it with :func:`scan_fill_for` (a benchmark repairing one
    scan with several networks of the same fill settings). ``self_check``: first estimate from
    the scan's own counts how far to trust the network's correction on partly damaged and on
    fully dead bins (:mod:`badblock.inference.selfcheck`; needs ``damage``, the ``(blocks,
    crystals)`` the mask was made of) and repair with those weights on a copy of the
    predictor; the summary's ``self_check`` says what it found, or why it did not run.
    Returns a summary dict (also what ``badblock repair`` writes as JSON).
    """
    from badblock.inference.engine import PlaneJob, run_job
    from badblock.io import open_scan_writer
    from badblock.physics.stack import padded_views
    from badblock.utils.hardware import tune_allocator

    log = log or (lambda _msg: None)
    t0 = time.perf_counter()
    tune_allocator()
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
    margin = int(getattr(predictor, "margin", 0) or 0)
    sens = _sensitivity(predictor, header.shape) if getattr(predictor, "per_lor", False) else None
    if batch_size < 1:
        raise BadInputError("repair.batch_size", f"must be >= 1, not {batch_size}")
    check_output(scan, out_path, force)
    if fill is None:
        fill = scan_fill_for(predictor, scan, mask, mu)
    elif _fill_settings_for(predictor, scan, mu) is None or fill.shape != header.shape:
        raise BadInputError("fill", f"a fill {list(fill.shape)} for a network that takes "
                            f"none or for a scan {list(header.shape)}")

    layout = getattr(predictor, "layout", None)
    skip_empty = getattr(layout, "normalise", getattr(predictor, "normalise", None)) in (
        "max", "mean")
    geometry = dict(context=context, segments=header.segments,
                    tof_order=header.tof_order if n_tof > 1 else "none", views_to=views_to,
                    mask_channel=mask_channel, skip_empty=skip_empty, margin=margin, sens=sens)

    def job_for(data, out, m, f, everything: bool = False, rest: bool = True) -> PlaneJob:
        # a reduction, not a boolean copy of the whole mask (a quarter of its size, at the peak)
        touched = m.reshape(n_planes, -1).max(axis=1, initial=0.0) > 0
        send = np.ones(n_planes, bool) if everything else touched
        return PlaneJob(data=data, out=out, mask=m, fill=f, **geometry,
                        items=[(t, int(p)) for t in range(n_tof) for p in np.flatnonzero(send)],
                        copies=[(t, a, b) for t in range(n_tof) for a, b in _runs(~send)]
                        if rest else [])

    if self_check is None:
        from badblock.config.evaluation import RepairConfig

        self_check = RepairConfig.self_check
    check = _self_check(scan, mask, predictor, job_for, damage, mu, batch_size, workers,
                        overlap, log, _existing(Path(out_path).parent)) if self_check else None
    if check is not None and check.ran:
        predictor = copy.copy(predictor)  # the caller's keeps its weights
        predictor.partial_weight = check.weights["partial"]
        predictor.dead_weight = check.weights["dead"]
    out_dtype = header.dtype
    is_int = out_dtype.kind in "iu"
    lo, hi = (np.iinfo(out_dtype).min, np.iinfo(out_dtype).max) if is_int else (None, None)

    with open_scan_writer(out_path, header, force=force) as writer:
        job = job_for(scan.data, writer.data, mask, fill, all_planes)
        items, planes = job.items, sorted({p for _, p in job.items})
        with progress(total=None, desc="repair", unit="batch") as bar:
            def done(n: int, total: int) -> None:
                bar.total = total
                bar.update(n)

            stats, ran = run_job(job, predictor, batch_size=batch_size, workers=workers,
                                 overlap=overlap, log=log, done=done)
        if stats.nonfinite:
            # inside the writer: the output is never published
            raise BadInputError(getattr(predictor, "path", "predictor"),
                                f"the network predicts NaN or inf for {stats.nonfinite} of the "
                                f"{int((mask > 0).sum()) * n_tof} damaged bins: a broken "
                                "checkpoint (NaN weights, a flipped bit?); nothing written")
        written = Path(writer.path)
        t_engine = time.perf_counter()
    seconds = time.perf_counter() - t0
    publish = time.perf_counter() - t_engine
    clipped = stats.clipped_low + stats.clipped_high
    if is_int:
        log(f"{written.name}: predictions rounded to {out_dtype.name} and clipped to "
            f"[{lo}, {hi}]: {clipped} bins clipped ({stats.clipped_low} below, "
            f"{stats.clipped_high} above)")
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
        "plane_images_predicted": stats.predicted,
        "plane_images_empty": stats.skipped,
        "bins_replaced": int((mask > 0).sum()) * n_tof,
        "bins_clipped": clipped,
        "bins_clipped_low": stats.clipped_low,
        "bins_clipped_high": stats.clipped_high,
        "nonfinite_predictions": stats.nonfinite,
        "context": context,
        "views_to": views_to,
        "mask_channel": bool(mask_channel),
        "batch_size": batch_size,
        "network_batch": ran["batch"],
        "workers": ran["workers"],
        "bf16": ran["bf16"],
        "bf16_error": ran["bf16_error"],
        "all_planes": bool(all_planes),
        "self_check": check.summary() if check is not None else {"ran": False,
                                                                  "why": "switched off"},
        "seconds": round(seconds, 3),
        **{f"busy_{k}": round(getattr(stats, k), 3)
           for k in ("stack_s", "network_s", "merge_s", "copy_s")},
        "publish_s": round(publish, 3),
        "plane_images_per_s": round(len(items) / seconds, 2) if seconds > 0 else None,
    }


def _self_check(scan, mask, predictor, job_for, damage, mu, batch_size, workers, overlap, log,
                scratch):
    """:func:`badblock.inference.selfcheck.self_check` of ``scan`` with repair's own job, its
    temporary files in ``scratch`` (the output's folder, which has room for a scan)."""
    from badblock.baselines import scan_fill
    from badblock.inference.engine import run_job
    from badblock.inference.selfcheck import self_check
    from badblock.physics.scanners import get_scanner

    fill_for = None
    settings = _fill_settings_for(predictor, scan, mu)
    if settings is not None:
        scanner = get_scanner(predictor.data["scanner"])

        def fill_for(data, m):
            return scan_fill(data, m, scanner, settings, mu=mu, tof_order=scan.header.tof_order)

    def predict(data, m, who, f, out):
        run_job(job_for(data, out, m, f, rest=False), who, batch_size=batch_size,
                workers=workers, overlap=overlap)

    blocks, crystals = damage or ((), ())  # unknown: self_check says why it cannot run
    check = self_check(scan.data, mask, predictor, predict, blocks=blocks, crystals=crystals,
                       fill_for=fill_for, scratch=scratch)
    log(f"{Path(scan.path).name}: {check.line()}")
    return check


def _existing(folder: Path) -> Path:
    """``folder``, or its nearest existing parent (the writer makes the output's folder later)."""
    return next((p for p in (folder, *folder.parents) if p.exists()), Path.cwd())


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of consecutive True entries of a bool array."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


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


def _mu_beside(inp, predictor) -> np.ndarray | None:
    """For a network that takes the model-based fill: the ``<id>.mu.npy`` beside the input
    scan (what ``badblock simulate`` and ``evaluate``'s damaged copies leave there), if any."""
    from badblock.io.naming import mu_sibling
    from badblock.physics.phantom import load_mu_map
    from badblock.physics.scanners import get_scanner

    layout = getattr(predictor, "layout", None)
    found = mu_sibling(Path(inp)) if getattr(layout, "fill_prior", False) else None
    if found is None:
        return None
    return load_mu_map(found, get_scanner(predictor.data["scanner"]))


def repair_files(inputs: Sequence[str | os.PathLike], mask, predictor: Callable,
                 out: str | os.PathLike, *, batch_size: int = 32, force: bool = False,
                 all_planes: bool = False, mask_check: bool = True,
                 unchecked_why: str = "switched off (--no-mask-check)",
                 declared: ResolvedMask | Sequence[ResolvedMask] | None = None,
                 log: Callable[[str], None] | None = None,
                 mus: Sequence[np.ndarray | None] | None = None,
                 self_check: bool | None = None) -> list[dict]:
    """:func:`repair_scan` for each input file (outputs per :func:`output_for`).

    ``mask``: one ``[plane, view, bin]`` mask for every input, or a list of one per input.
    Every input is checked before the first is written: its mask's shape, the checkpoint's
    scanner (:func:`check_checkpoint`), finite values (float scans), its output path, and
    with ``mask_check`` the mask against the scan's counts (:func:`mask_report`; ``declared``
    says what the mask was made of, when known). Temporaries that killed repairs left beside
    the outputs are removed. Each summary's ``mask_check`` holds the check's report (or, without
    ``mask_check``, ``unchecked_why``); ``declared`` may also be one per input (masks that
    ``detect`` found). ``self_check``: :func:`repair_scan`'s, with the dead blocks and crystals
    of ``declared`` (it cannot run on a mask of unknown make). ``mus``: each input's
    attenuation map, for a network that takes the model-based fill (:func:`scan_fill_for`;
    None: the ``<id>.mu.npy`` beside each input, where there is one).
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
    kinds = list(declared) if isinstance(declared, (list, tuple)) else [declared] * len(inputs)
    if len(kinds) != len(inputs):
        raise BadInputError("mask", f"{len(kinds)} mask origins for {len(inputs)} scans")
    for scan, m, declared in zip(scans, masks, kinds):
        reports.append(mask_report(scan, m, declared) if mask_check else
                       {"checked": False, "why": unchecked_why})
    for target in targets:
        clean_orphans(target.parent, [p.name for p in output_paths(target, "flat")
                                      + output_paths(target, "interfile")
                                      + output_paths(target, "e7")])
    summaries = []
    if mus is None:
        mus = [_mu_beside(inp, predictor) for inp in inputs]
    mus = list(mus)
    if len(mus) != len(inputs):
        raise BadInputError("mu", f"{len(mus)} attenuation maps for {len(inputs)} scans")
    for scan, mu in zip(scans, mus):  # every input's fill can be made, before any is written
        _fill_settings_for(predictor, scan, mu)
    for scan, m, target, report, mu, d in zip(scans, masks, targets, reports, mus, kinds):
        damage = (d.blocks, d.crystals) if d is not None and d.scanner else None
        summary = repair_scan(scan, m, predictor, target, batch_size=batch_size, force=force,
                              all_planes=all_planes, log=log, mu=mu, self_check=self_check,
                              damage=damage)
        summaries.append({**summary, "mask_check": report})
    return summaries
