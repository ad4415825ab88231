"""Score repairs and classical baselines against the truth: ``badblock evaluate``.

For each test scan we have the complete measured scan, for simulated data its noiseless truth,
a damaged version (the complete scan thinned by the mask), and zero or more repairs of it (the
network's). Every baseline of :mod:`badblock.baselines` is run on the damaged scan and scored
next to the repairs:

- sinogram, damaged bins (f > 0): NRMSE and bias, against the truth and the measured scan;
- sinogram, whole affected planes: PSNR and SSIM;
- image domain: FBP of the affected direct planes (segment 0, summed over TOF), NRMSE inside the
  reconstruction circle, PSNR and SSIM, against the FBP of the truth and of the measured scan
  (against the truth, the noise of unsmoothed FBP dominates; against the measured scan, what
  remains is the damage itself).

Outputs in the output folder: ``metrics.json`` (atomic), ``report.png`` and the printed table.
:func:`evaluate` works on arrays (the demo calls it); :func:`evaluate_files` reads scans.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from badblock import baselines as bl
from badblock import metrics
from badblock.errors import BadInputError
from badblock.io.naming import mu_sibling, scan_id, truth_sibling
from badblock.io.segments import Segment
from badblock.utils.atomic import atomic_save_npy, atomic_write_json
from badblock.utils.progress import progress

METRICS_NAME = "metrics.json"
REPORT_NAME = "report.png"
# Why damaged scans made here are not checked against their mask: they are that mask's thinning.
MADE_FROM_MASK = "the damaged scans were made by thinning the complete ones with this mask"
# Reconstructing every affected direct plane of a big scanner adds nothing to the averages.
MAX_FBP_PLANES = 24


@dataclass
class EvalCase:
    """One test scan, all arrays ``[TOF, plane, view, bin]``.

    ``damaged`` is what a repair sees; ``measured`` the complete measured scan and ``truth`` its
    noiseless expectation (either may be None, not both); ``repairs`` maps a method name (e.g.
    ``'unet'``) to that method's repair of ``damaged``; ``mu``: the scan's attenuation map
    (``[z, y, x]``, 1/mm), which the ``model`` baseline models when given.
    """

    name: str
    damaged: np.ndarray
    measured: np.ndarray | None = None
    truth: np.ndarray | None = None
    repairs: dict[str, np.ndarray] = field(default_factory=dict)
    mu: np.ndarray | None = None


def thin_scan(counts: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A damaged version of a complete scan ``[TOF, plane, view, bin]``: each count survives
    with probability ``1 - f``, ``f`` from ``mask`` ``[plane, view, bin]``
    (:func:`badblock.data.corruption.thin`, drawn from ``rng``).

    Integer counts keep their dtype; float counts are rounded to whole counts first and come
    back as float32.
    """
    from badblock.data.corruption import thin

    counts = np.asarray(counts)
    out = thin(counts, 1.0 - np.asarray(mask, np.float64), rng)
    return out.astype(counts.dtype if counts.dtype.kind in "iu" else np.float32)


def _finite(x):
    """JSON has no NaN or infinity: turn them into null."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def _mean_dicts(items: Sequence[dict]) -> dict:
    """Mean of nested metric dicts over scans (keys of the first; NaN entries skipped)."""
    out: dict = {}
    for key, val in items[0].items():
        if isinstance(val, dict):
            out[key] = _mean_dicts([it[key] for it in items if key in it])
        elif isinstance(val, str):
            out[key] = val
        else:
            vals = [float(it[key]) for it in items if key in it and it[key] is not None
                    and math.isfinite(float(it[key]))]
            out[key] = float(np.mean(vals)) if vals else float("nan")
    return out


def _fbp_planes(mask: np.ndarray, segments: Sequence[Segment] | None) -> np.ndarray:
    """The affected direct planes to reconstruct, the most damaged first (at most a few)."""
    n0 = mask.shape[0] if segments is None else segments[0].n_planes
    damage = (mask[:n0] > 0).sum(axis=(1, 2))
    planes = np.flatnonzero(damage)
    order = planes[np.argsort(-damage[planes], kind="stable")]
    return np.sort(order[:MAX_FBP_PLANES])


def choose_widths(tune: Sequence[tuple[np.ndarray, np.ndarray]] | None, mask: np.ndarray,
                  widths: Sequence[float] | None, segments, tof_order,
                  sensitivity: np.ndarray | None = None) -> tuple[tuple, str]:
    """Normalised-convolution widths and where they came from (given / tuned / default)."""
    if widths is not None:
        return tuple(float(w) for w in widths), "given"
    if tune:
        tuned = bl.tune_normconv([d for d, _ in tune], [r for _, r in tune], mask,
                                 segments=segments, tof_order=tof_order,
                                 sensitivity=sensitivity)
        return tuned, f"tuned on {len(tune)} validation scan(s)"
    return tuple(bl.DEFAULT_WIDTHS), "default (no validation scans to tune on)"


def evaluate(cases: Sequence[EvalCase], mask: np.ndarray, out_dir: str | os.PathLike, *,
             baselines: Sequence[str] = tuple(bl.BASELINES), widths: Sequence[float] | None = None,
             tune: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
             segments: Sequence[Segment] | None = None, tof_order: str | None = None,
             sensitivity: np.ndarray | None = None, fbp: bool = True, figure: bool = True,
             extra: Mapping | None = None, log: Callable[[str], None] | None = None,
             model_options: Mapping | None = None) -> dict:
    """Score every baseline and repair of ``cases``; write ``metrics.json`` and ``report.png``.

    ``mask`` is ``[plane, view, bin]`` (fraction of LORs lost); ``sensitivity`` (same shape, e.g.
    :func:`badblock.physics.real_lor_count`) lets the filling baselines work on counts per LOR.
    ``widths`` fixes the normalised-convolution sigmas (planes, views, bins); otherwise they are
    tuned on ``tune`` (pairs of damaged validation scan and its reference), else defaults are
    used and the JSON says so. ``extra`` is stored in the JSON as it is (inputs, config).
    Returns the metrics dict.
    """
    log = log or (lambda _msg: None)
    if not cases:
        raise BadInputError("evaluate", "no scans to evaluate")
    mask = np.asarray(mask, dtype=np.float32)
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise BadInputError("evaluate", f"scan names must differ, got {names}")
    for c in cases:
        if c.truth is None and c.measured is None:
            raise BadInputError(c.name, "needs a truth or a complete measured scan to score "
                                        "against")
        for label, arr in [("damaged", c.damaged), ("measured", c.measured), ("truth", c.truth),
                           *c.repairs.items()]:
            if arr is not None and np.shape(arr)[-3:] != mask.shape:
                raise BadInputError(c.name, f"{label} scan [plane, view, bin] "
                                            f"{np.shape(arr)[-3:]} does not match the mask "
                                            f"{mask.shape}")
            if arr is not None and np.shape(arr) != np.shape(c.damaged):
                raise BadInputError(c.name, f"{label} scan shape {np.shape(arr)} differs from the "
                                            f"damaged scan {np.shape(c.damaged)}")
    for name in baselines:
        bl.get_baseline(name)
    out_dir = Path(out_dir)
    nc_widths, widths_from = (None, "")
    if "normconv" in baselines:
        nc_widths, widths_from = choose_widths(tune, mask, widths, segments, tof_order,
                                               sensitivity)
        log(f"normconv widths (planes, views, bins) = {nc_widths}: {widths_from}")
    fbp_planes = _fbp_planes(mask, segments) if fbp else np.zeros(0, int)
    if fbp and fbp_planes.size == 0:
        log("no direct plane is damaged: image-domain scores skipped")
    methods = list(baselines) + [m for c in cases for m in c.repairs if m not in baselines]
    methods = list(dict.fromkeys(methods))
    per_scan: dict = {}
    figure_case: dict = {}
    for ci, case in enumerate(progress(cases, total=len(cases), desc="evaluate", unit="scan")):
        outputs: dict[str, np.ndarray] = {}
        for name in baselines:
            kw = {"segments": segments, "tof_order": tof_order, "sensitivity": sensitivity}
            if name == "normconv":
                kw["widths"] = nc_widths
            if name == "model":  # the OSEM settings of the network's fills: equal terms
                kw.update(model_options or {}, mu=case.mu)
            # equal terms: every method fills the damaged bins only, rounded as the scan is
            # stored (normconv's raw output smooths every bin, which would flatter its image)
            outputs[name] = metrics.data_consistent(
                bl.get_baseline(name)(case.damaged, mask, **kw), case.damaged, mask)
        for name, arr in case.repairs.items():
            outputs[name] = metrics.data_consistent(arr, case.damaged, mask)
        refs = {k: v for k, v in (("truth", case.truth), ("measured", case.measured))
                if v is not None}
        scores: dict = {m: {} for m in outputs}
        for ref_name, ref in refs.items():
            for m, x in outputs.items():
                scores[m][ref_name] = metrics.score(x, ref, mask)
        images: dict[str, np.ndarray] = {}
        if fbp_planes.size:
            from badblock.physics.recon import fov_support, reconstruct_direct

            ref_imgs = {k: reconstruct_direct(v, segments, fbp_planes) for k, v in refs.items()}
            support = fov_support(mask.shape[-1])
            for m, x in outputs.items():
                images[m] = reconstruct_direct(x, segments, fbp_planes)
                for k, ref_img in ref_imgs.items():
                    scores[m][f"image_{k}"] = metrics.image_scores(images[m], ref_img, support)
            images["reference"] = ref_imgs["truth" if "truth" in ref_imgs else "measured"]
        per_scan[case.name] = scores
        if ci == 0:
            figure_case = {"case": case, "outputs": outputs, "images": images}
    mean = {m: _mean_dicts([per_scan[c][m] for c in per_scan if m in per_scan[c]])
            for m in methods}
    result = {
        "methods": methods,
        "scans": list(per_scan),
        "reference_note": "sinogram NRMSE and bias over damaged bins (f > 0); PSNR and SSIM "
                          "over whole affected planes; image scores on FBP of affected direct "
                          "planes inside the reconstruction circle",
        "normconv_widths": None if nc_widths is None else
        {"planes": nc_widths[0], "views": nc_widths[1], "bins": nc_widths[2],
         "source": widths_from},
        "fbp_planes": [int(p) for p in fbp_planes],
        "sensitivity": "given" if sensitivity is not None else "none",
        "damaged_bins": int((mask > 0).sum()),
        "affected_planes": int(metrics.affected_planes(mask).size),
        "mean": mean,
        "per_scan": per_scan,
    }
    if extra:
        result.update(dict(extra))
    result = _finite(result)
    atomic_write_json(out_dir / METRICS_NAME, result)
    if figure:
        from badblock.report import draw_report

        draw_report(out_dir / REPORT_NAME, figure_case["case"], figure_case["outputs"], mask,
                    figure_case["images"], fbp_planes, segments)
    return result


def format_table(result: Mapping) -> str:
    """The printed table: one row per method, means over scans."""
    cols = [("NRMSE/truth", ("truth", "nrmse")), ("NRMSE/meas", ("measured", "nrmse")),
            ("bias/truth", ("truth", "bias")), ("bias/meas", ("measured", "bias")),
            ("PSNR", ("truth", "psnr")), ("SSIM", ("truth", "ssim")),
            ("img/truth", ("image_truth", "nrmse")),
            ("img/meas", ("image_measured", "nrmse"))]

    def get(m, path):
        d = result["mean"].get(m, {})
        if path[0] == "truth" and "truth" not in d and path[1] in ("psnr", "ssim"):
            path = ("measured", path[1])  # no noiseless truth: whole-plane scores vs measured
        for k in path:
            d = d.get(k) if isinstance(d, dict) else None
        return d

    present = [(h, p) for h, p in cols
               if any(get(m, p) is not None for m in result["methods"])]
    width = max(10, *(len(m) for m in result["methods"]))
    lines = [f"{'method':<{width}}" + "".join(f"{h:>13}" for h, _ in present)]
    for m in result["methods"]:
        row = f"{m:<{width}}"
        for h, p in present:
            v = get(m, p)
            if v is None:
                row += f"{'-':>13}"
            elif h.startswith("bias"):
                row += f"{v:>+13.4f}"
            elif h == "PSNR":
                row += f"{v:>13.2f}"
            else:
                row += f"{v:>13.4f}"
        lines.append(row)
    return "\n".join(lines)


# -- files ---------------------------------------------------------------------------------------

def truth_path(path: str | os.PathLike) -> Path:
    """The truth sidecar of a simulated scan: ``scan_000.hs`` -> ``scan_000.truth.hs``."""
    path = Path(path)
    name = path.name
    for suffix in (".s.hdr", ".hs", ".s", ".hdr"):
        if name.lower().endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".truth" + name[-len(suffix):])
    return path.with_name(path.stem + ".truth" + path.suffix)


def _load_truth(path) -> tuple[np.ndarray | None, Path | None]:
    """The noiseless truth beside a simulated scan (float32) and its path, or (None, None)."""
    tp = truth_sibling(Path(path))
    return (None, None) if tp is None else (_load(tp)[0].astype(np.float32), tp)


def _load(path) -> tuple[np.ndarray, object]:
    """A whole scan in memory (evaluation is for test-size scans) and its header; NaN or inf
    in it (a truth file too) is a :class:`BadInputError` naming the file and the bin."""
    from badblock.io import check_finite, read_scan

    scan = read_scan(path)
    check_finite(scan)
    return np.asarray(scan.data), scan.header


def check_shapes(paths: Sequence[str | os.PathLike], mask: np.ndarray, what: str,
                 mask_name: str) -> None:
    """Refuse, from the headers alone and before anything is written, a scan whose
    ``[plane, view, bin]`` is not the mask's (a mask of another scanner)."""
    from badblock.io import read_header

    for path in paths:
        shape = tuple(read_header(path).shape[1:])
        if shape != tuple(mask.shape):
            raise BadInputError(path, f"{what} scan [plane, view, bin] {list(shape)} does not "
                                      f"match the mask {list(mask.shape)} ({mask_name}): a mask "
                                      "of another scanner?")


def write_damaged(complete: Sequence[str | os.PathLike], mask: np.ndarray,
                  folder: str | os.PathLike, *, seed: int = 0) -> list[Path]:
    """Thin each complete scan by ``mask`` and write it (same format, name) into ``folder``.

    The same ``seed`` gives the same damaged scans as :func:`evaluate_files` makes in memory.
    Every scan's shape is checked against the mask before the first is written; NaN or inf in
    one is a :class:`BadInputError`.
    """
    from badblock.io import write_scan

    check_shapes(complete, mask, "complete", "the mask")
    rng = np.random.default_rng(seed)
    out = []
    for path in complete:
        data, header = _load(path)
        dam = thin_scan(data, mask, rng)
        out.append(Path(write_scan(Path(folder) / Path(path).name, dam.astype(header.dtype),
                                   header, force=True)))
        mu = mu_sibling(Path(path))
        if mu is not None:  # a fill-prior network's repair of it needs the map beside it
            atomic_save_npy(Path(folder) / mu.name, np.load(mu, allow_pickle=False))
    return out


def evaluate_files(complete: Sequence[str | os.PathLike], mask: np.ndarray,
                   out_dir: str | os.PathLike, *, damaged: Sequence | None = None,
                   repaired: Mapping[str, Sequence] | None = None,
                   tune: Sequence[str | os.PathLike] = (), seed: int = 0,
                   baselines: Sequence[str] = tuple(bl.BASELINES),
                   widths: Sequence[float] | None = None, fbp: bool = True,
                   scanner: str | None = None, use_sensitivity: bool = True,
                   extra: Mapping | None = None, shown: Callable[[Path], str] = str,
                   log: Callable[[str], None] | None = None,
                   model_options: Mapping | None = None) -> dict:
    """:func:`evaluate` on scan files.

    ``complete``: complete measured scans (a ``<stem>.truth.<ext>`` sibling is used as the
    noiseless truth when present). ``damaged``: their damaged versions in the same order; when
    None each complete scan is thinned by ``mask`` (seeded by ``seed``). ``repaired``: method
    name -> repaired scans in the same order. ``tune``: complete validation scans (with truth
    sidecars, else scored against themselves) to tune the normalised-convolution widths on.
    ``scanner`` (else the scan header's) names the preset whose real-LOR count per bin is the
    baselines' sensitivity, when its sinogram shape is the mask's; ``use_sensitivity=False``
    turns that off. ``shown`` is how a file is named in the JSON (a caller building the output
    under a temporary name gives the final names). NaN or inf in any scan (a truth too) is a
    :class:`BadInputError`. ``model_options``: the ``model`` baseline's settings
    (``iterations``, ``subsets``, ``projector_options``); its attenuation map is each complete
    scan's ``<id>.mu.npy`` sibling when there is one.
    """
    log = log or (lambda _msg: None)
    if not complete:
        raise BadInputError("evaluate", "no complete scans given")
    for label, paths in [("--damaged", damaged), *((f"--repaired {k}", v)
                                                  for k, v in (repaired or {}).items())]:
        if paths is not None and len(paths) != len(complete):
            raise BadInputError(label, f"{len(paths)} scans given for {len(complete)} complete "
                                       "scans (one each, in the same order)")
    for label, paths in [("complete", complete), ("damaged", damaged or ()), ("tune", tune),
                         *((f"{k} repaired", v) for k, v in (repaired or {}).items())]:
        check_shapes(paths, mask, label, "the mask")
    rng = np.random.default_rng(seed)
    segments = tof_order = header = None
    cases = []
    inputs: dict = {"complete": [], "truth": [], "damaged": [], "repaired": {}}
    for i, path in enumerate(complete):
        measured, header = _load(path)
        segments = header.segments
        tof_order = header.tof_order
        truth, tp = _load_truth(path)
        if damaged is not None:
            dam = _load(damaged[i])[0]
        else:
            dam = thin_scan(measured, mask, rng)
        reps = {k: _load(v[i])[0] for k, v in (repaired or {}).items()}
        mu = None
        if ("model" in baselines and (scanner or header.scanner)
                and mu_sibling(Path(path)) is not None):
            from badblock.physics import get_scanner
            from badblock.physics.phantom import load_mu_map

            mu = load_mu_map(mu_sibling(Path(path)), get_scanner(scanner or header.scanner))
        cases.append(EvalCase(scan_id(Path(path)), dam, measured, truth, reps, mu))
        inputs["complete"].append(shown(Path(path)))
        inputs["truth"].append(shown(tp) if truth is not None else None)
        inputs["damaged"].append(shown(Path(damaged[i])) if damaged is not None else
                                 f"thinned by the mask (seed {seed})")
        for k, v in (repaired or {}).items():
            inputs["repaired"].setdefault(k, []).append(shown(Path(v[i])))
    sensitivity, sens_from = None, "none"
    name = scanner or (header.scanner if header is not None else None)
    if name and use_sensitivity:
        from badblock.physics import get_scanner, real_lor_count

        sc = get_scanner(name)
        if tuple(sc.shape[1:]) == tuple(mask.shape):
            sensitivity = real_lor_count(sc).astype(np.float32)
            sens_from = f"real LORs per bin of {sc.name}"
    log(f"baseline sensitivity: {sens_from}")
    pairs = []
    for path in tune:
        measured, _ = _load(path)
        truth, _ = _load_truth(path)
        ref = measured if truth is None else truth
        pairs.append((thin_scan(measured, mask, rng), ref))
    more = {"inputs": inputs, "tune_scans": [shown(Path(p)) for p in tune],
            "sensitivity": sens_from}
    more.update(dict(extra or {}))
    return evaluate(cases, mask, out_dir, baselines=baselines, widths=widths, tune=pairs,
                    segments=segments, tof_order=tof_order, sensitivity=sensitivity, fbp=fbp,
                    extra=more, log=log,
                    model_options={**(model_options or {}),
                                   **({"scanner": name} if name else {})})
