"""One case of the quality benchmark: test scans -> damage -> every method -> every score.

A case is (data set, activity family, count level, dead-block pattern). Its test scans are
simulated with ``badblock simulate`` (the family's phantoms at ``level`` x the preset's counts,
seed stream ``test``) and damaged by binomial thinning with the pattern's mask (stream
``thin``), exactly as the trainer damages its samples. Every method then sees the same damaged
scan and its output goes through one rule, :func:`badblock.metrics.data_consistent`: only bins
with f > 0 are filled, every other bin keeps the measured counts, everything is rounded to the
scan's dtype -- the network's repair (written by ``badblock repair``) passes through it
unchanged. Rows:

- every classical baseline of the suite (data-consistent), and ``unet``: the data set's
  network (``checkpoint_best.pt``) through :func:`badblock.repair.repair_files`;
- ``normconv, all bins (not data-consistent)``: normconv's raw output, which smooths every bin;
  an extra row, never a comparison;
- ``complete scan (reference)``: the complete measured scan, i.e. the Poisson noise floor a
  repair cannot beat on the truth (it is what the damaged bins held before the damage);
- ``truth-filled (reference)``: the damaged scan with each damaged bin's expected lost counts
  ``f x truth`` added (:func:`truth_filled`): what a fill that knew the truth would deliver,
  the ceiling of every fill (its only error is the surviving counts' own noise).

Scores per scan (means over the case's scans are what the suite reports): damaged-bin NRMSE and
bias against the noiseless truth by bin class (all f > 0, partly damaged, fully dead), NRMSE
against the complete measured scan, the lost-count error, whole-plane PSNR and SSIM over the
affected planes, and FBP of the most damaged direct planes (NRMSE inside the reconstruction
circle against the FBP of the truth).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from quality_data import Choices, Dataset, simulate_folder, simulation_config
from quality_suite import Suite, seeds_for

from badblock import baselines as bl
from badblock import metrics

UNET = "unet"
ALL_BINS = "normconv, all bins (not data-consistent)"
COMPLETE = "complete scan (reference)"
TRUTH_FILLED = "truth-filled (reference)"


@dataclass
class TestScan:
    """One complete test scan of a case: never seen by any choice (see quality_data)."""

    name: str
    path: Path
    measured: np.ndarray  # [TOF, plane, view, bin] in the scan's dtype
    truth: np.ndarray  # float32 noiseless expectation
    header: object
    activity: np.ndarray | None = None  # the phantom [z, y, x] (relative units)
    mu: np.ndarray | None = None  # its attenuation map, 1/mm


def case_name(d: int, family: str, level: str, pattern: str) -> str:
    return f"d{d}/{family}/{level}/{pattern}"


def simulate_tests(suite: Suite, ds: Dataset, family: str, level: str, work: Path
                   ) -> list[TestScan]:
    """The test scans of (data set, family) at ``level``: ``badblock simulate`` with the
    family's phantoms and the test seed of (data set, family) -- the same phantoms at every
    count level."""
    from badblock.demo import scan_headers
    from badblock.io import read_scan
    from badblock.io.naming import scan_id, truth_sibling
    from badblock.physics import get_scanner
    from badblock.physics.projector import scanner_geometry
    from badblock.physics.simulate import SIMULATION_JSON, make_sources

    settings = dict(scans=suite.test_scans,
                    counts=float(suite.count_levels[level]) * ds.cfg.simulate.counts,
                    seed=seeds_for(suite, "test", ds.index, family),
                    # the family itself, not the preset's phantoms (which may be a mix)
                    family=family,
                    params=suite.families[family])
    folder = simulate_folder(ds.cfg, work / f"d{ds.index}" / "sim" / f"test-{family}@{level}",
                             **settings)
    # The phantoms again, from the generator the simulation drew them with (same seeds).
    cfg = simulation_config(ds.cfg, **settings)
    geom = scanner_geometry(get_scanner(suite.scanner), tof_fwhm_ps=cfg.simulate.tof_fwhm_ps)
    sources = make_sources(cfg, geom, suite.test_scans)
    records = json.loads((folder / SIMULATION_JSON).read_text())["scans"]
    out = []
    for path, source, rec in zip(scan_headers(folder), sources, records):
        if json.loads(json.dumps(source.params)) != rec["phantom"]:
            raise RuntimeError(f"{folder}: the phantom regenerated for {path.name} is not the "
                               "one simulated")
        scan = read_scan(path)
        truth = np.asarray(read_scan(truth_sibling(path)).data, np.float32)
        out.append(TestScan(scan_id(path), path, np.asarray(scan.data), truth, scan.header,
                            source.activity, source.mu))
    return out


def _repair_with_network(predictor, damaged: list[np.ndarray], scans: list[TestScan],
                         mask: np.ndarray, folder: Path, declared) \
        -> tuple[list[np.ndarray], list[dict]]:
    """The network's repairs of ``damaged``, made the way ``badblock repair --scanner
    --dead-blocks`` makes them (``declared``: the mask's scanner and blocks, so that repair's
    self-check runs as it does for a user who names them), and each scan's self-check
    report."""
    from badblock.io import read_scan, write_scan
    from badblock.repair import repair_files

    folder.mkdir(parents=True, exist_ok=True)
    inputs = [write_scan(folder / "damaged" / s.path.name, dam, s.header, force=True)
              for dam, s in zip(damaged, scans)]
    # a fill-prior network makes the model-based fill of each scan with its attenuation map
    done = repair_files(inputs, mask, predictor, folder / "repaired", force=True,
                        mus=[s.mu for s in scans], declared=declared)
    return ([np.asarray(read_scan(folder / "repaired" / s.path.name).data) for s in scans],
            [d["self_check"] for d in done])


def truth_filled(damaged: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``damaged + f x truth`` on the damaged bins, data-consistent and rounded as every row:
    the expected complete counts given the surviving ones (binomial thinning leaves the lost
    counts Poisson with mean ``f x truth``, independent of the surviving ``y``), so its
    lost-count error is only the rounding and its damaged-bin error only ``y``'s noise."""
    f = np.broadcast_to(np.asarray(mask, np.float64), damaged.shape)
    return metrics.data_consistent(np.asarray(damaged, np.float64) + f * truth, damaged, mask)


def method_outputs(suite: Suite, choices: Choices, scan: TestScan, damaged: np.ndarray,
                   repaired: np.ndarray | None, mask: np.ndarray, pattern: str, level: str,
                   sensitivity: np.ndarray, image) -> dict[str, np.ndarray]:
    """Every row's output for one damaged scan (data-consistent except the labelled row).

    ``image``: the :class:`quality_image.ImageScorer`, whose gaps-modelled reconstruction the
    model-based fill projects (one OSEM for both). ``repaired`` None: no ``unet`` row (the
    rows that need no network, :mod:`image_ceiling`)."""
    h = scan.header
    kw = {"segments": h.segments, "tof_order": h.tof_order, "sensitivity": sensitivity}
    out: dict[str, np.ndarray] = {}
    raw_normconv = None
    for name in suite.baselines:
        extra = {}
        if name == "normconv":
            extra["widths"] = tuple(choices.normconv_widths[f"{pattern}/{level}"])
        if name == "model":
            extra.update(scanner=suite.scanner, mu=scan.mu, projector_options=suite.osem.projector,
                         iterations=suite.osem.iterations, subsets=suite.osem.subsets,
                         image=image.gaps_modelled(scan, damaged, mask))
        raw = bl.get_baseline(name)(damaged, mask, **kw, **extra)
        if name == "normconv":
            raw_normconv = raw
        out[name] = metrics.data_consistent(raw, damaged, mask)
    if repaired is not None:
        out[UNET] = metrics.data_consistent(repaired, damaged, mask)
    if raw_normconv is not None:
        out[ALL_BINS] = raw_normconv
    out[COMPLETE] = scan.measured
    out[TRUTH_FILLED] = truth_filled(damaged, scan.truth, mask)
    return out


def sinogram_scores(x: np.ndarray, scan: TestScan, damaged: np.ndarray, mask: np.ndarray,
                    fbp_planes: np.ndarray, fbp_truth: np.ndarray) -> dict[str, float]:
    """Flat dict of the sinogram and FBP scores of one output ``x`` of one scan."""
    from badblock.physics.recon import fov_support, reconstruct_direct

    s: dict[str, float] = {}
    for cls, v in metrics.damaged_scores(x, scan.truth, mask).items():
        s[f"nrmse_{cls}"] = v["nrmse"]
        s[f"bias_{cls}"] = v["bias"]
    s["nrmse_measured"] = metrics.nrmse(x, scan.measured, mask)
    lost = metrics.lost_scores(x, damaged, scan.truth, mask)
    s["lost_nrmse"], s["lost_bias"] = lost["nrmse"], lost["bias"]
    planes = metrics.affected_planes(mask)
    s["psnr"] = metrics.psnr(x, scan.truth, planes)
    s["ssim"] = metrics.ssim(x, scan.truth, planes)
    if fbp_planes.size:
        img = reconstruct_direct(x, scan.header.segments, fbp_planes)
        s["fbp_nrmse"] = metrics.image_scores(img, fbp_truth,
                                              fov_support(mask.shape[-1]))["nrmse"]
    return s


def fbp_planes_for(mask: np.ndarray, segments, n: int) -> np.ndarray:
    """The ``n`` most damaged direct planes (sorted)."""
    n0 = segments[0].n_planes
    damage = (mask[:n0] > 0).sum(axis=(1, 2))
    planes = np.flatnonzero(damage)
    return np.sort(planes[np.argsort(-damage[planes], kind="stable")][:n])


def mean_scores(per_scan: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean over scans of every (method, metric) (NaN entries left out; all-NaN -> NaN)."""
    out: dict[str, dict[str, float]] = {}
    for method in per_scan[0]:
        out[method] = {}
        for key in per_scan[0][method]:
            vals = [s[method][key] for s in per_scan
                    if math.isfinite(s.get(method, {}).get(key, np.nan))]
            out[method][key] = float(np.mean(vals)) if vals else float("nan")
    return out


def run_case(suite: Suite, ds: Dataset, predictor, scans: list[TestScan], family: str,
             level: str, pattern: str, work: Path, image, *,
             log: Callable[[str], None] = print) -> dict:
    """Score every method on one case; returns its JSON record (means over its scans; the
    image-domain scores over its first ``suite.image_scans``). ``image``: the case's
    :class:`quality_image.ImageScorer`."""
    from badblock.evaluate import thin_scan
    from badblock.physics import dead_block_mask, get_scanner, parse_blocks, real_lor_count
    from badblock.physics.mask import ResolvedMask
    from badblock.physics.recon import reconstruct_direct

    t0 = time.perf_counter()
    name = case_name(ds.index, family, level, pattern)
    scanner = get_scanner(suite.scanner)
    blocks = parse_blocks(suite.patterns[pattern])
    mask = dead_block_mask(scanner, blocks)
    sens = real_lor_count(scanner).astype(np.float32)
    damaged = [thin_scan(s.measured, mask, np.random.default_rng(seeds_for(
        suite, "thin", ds.index, family, level, pattern, s.name))) for s in scans]
    repaired, checks = _repair_with_network(predictor, damaged, scans, mask,
                                            work / f"d{ds.index}" / "cases" / family / level
                                            / pattern,
                                            ResolvedMask(mask, scanner=scanner.name,
                                                         blocks=blocks))
    fbp_planes = fbp_planes_for(mask, scans[0].header.segments, suite.fbp_planes)
    per_scan, panel, rois = [], None, None
    for i, (scan, dam, rep) in enumerate(zip(scans, damaged, repaired)):
        outputs = method_outputs(suite, ds.choices, scan, dam, rep, mask, pattern, level, sens,
                                 image)
        fbp_truth = reconstruct_direct(scan.truth, scan.header.segments, fbp_planes)
        scores = {m: sinogram_scores(x, scan, dam, mask, fbp_planes, fbp_truth)
                  for m, x in outputs.items()}
        if i < suite.image_scans:
            img_scores, img_panel, scan_rois = image.score(scan, dam, outputs, mask,
                                                           keep_panel=i == 0)
            rois = rois or scan_rois
            for m, v in img_scores.items():
                scores.setdefault(m, {}).update(v)
            panel = panel or img_panel
        per_scan.append(scores)
    record = {"case": name, "dataset": ds.index, "family": family, "count_level": level,
              "counts": float(suite.count_levels[level]) * ds.cfg.simulate.counts,
              "pattern": pattern, "blocks": list(suite.patterns[pattern]),
              "scans": [s.name for s in scans], "damaged_bins": int((mask > 0).sum()),
              "dead_bins": int(metrics.bin_classes(mask)["dead"].sum()),
              "normconv_widths": ds.choices.normconv_widths.get(f"{pattern}/{level}"),
              "roi_voxels": rois, "self_check": checks,
              "seconds": round(time.perf_counter() - t0, 1),
              "methods": _fill_missing(mean_scores(per_scan))}
    log(f"[{name}] damaged-bin NRMSE vs truth: " + ", ".join(
        f"{m} {v['nrmse_all']:.4f}" for m, v in record["methods"].items()
        if m in (*suite.baselines, UNET)))
    return record if panel is None else {**record, "_panel": panel}


def _fill_missing(methods: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Every method gets every metric key (NaN where a row has no such score), so that the
    tables and the JSON have the same columns for every row."""
    keys = list(dict.fromkeys(k for v in methods.values() for k in v))
    return {m: {k: v.get(k, float("nan")) for k in keys} for m, v in methods.items()}
