"""What any fill can do in the image: OSEM of the suite's cases filled with the truth.

    python bench/image_ceiling.py        # every case of the suite, ~15 min on 2 cores
    python bench/image_ceiling.py --smoke --scoring F   # the smoke suite's case (CI)

The learned repair's image targets (issue: OSEM of its repair no worse than OSEM of every
classical fill, case by case, and the dead volume's ROI bias within +-1 %) are scored on one
OSEM of one test scan a case. This asks whether *any* fill can meet them: each case's first
test scan, damaged exactly as the suite damages it, is filled with the truth's expected lost
counts (:func:`quality_cases.truth_filled`: the best a fill could be, its only error the
surviving counts' noise) and reconstructed the way the suite reconstructs every row, beside
every classical row made again (normconv with the widths the scoring chose on validation
scans, read from ``--scoring``). The classical rows made here are checked against the
scoring's own (the same scans, thinning, fills and OSEM: they agree to float noise), so the
truth-filled row compares with the scoring's ``unet`` row on equal terms.

Two more kinds of row say how far the fill must go and what of the network's repair the image
sees: the model-based fill moved part of the way to the truth on fully dead bins only, and the
scoring's own network repair (read from its work folder; its image is checked against the
scoring's ``unet`` row) on one bin class with the fill on the other.

Evaluation only: it reads the frozen suite's test scans and their truth and chooses nothing
(no network is trained or run). Writes ``bench/results/image_ceiling.json`` and prints its
summary; ``python bench/quality_docs.py`` quotes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from quality_cases import COMPLETE, TRUTH_FILLED, case_name, method_outputs, simulate_tests
from quality_data import Choices, Dataset, _config
from quality_report import IMAGE_CLASSICAL, classical_rows, gmean
from quality_suite import DEFAULT_SUITE, ROOT, load_suite, seeds_for

RESULTS = ROOT / "bench" / "results"
# The rows whose image this run makes again and checks against the scoring.
CHECKED = ("interp", "biharmonic", "normconv", "model", COMPLETE, IMAGE_CLASSICAL)
# Where the truth-filled row's image gain lies: the truth on one bin class, the model-based
# fill on the other.
TRUTH_DEAD = "truth on fully dead bins, model fill elsewhere"
TRUTH_PARTIAL = "truth on partly damaged bins, model fill elsewhere"
# How much of the way a fill must go on the fully dead bins before the image sees it: the
# model-based fill moved a fraction a of the way to the truth there (rounded as every row). On
# a fully dead bin the truth-filled value is the truth itself, rounded (nothing survived), so
# that row keeps (1 - a) of the model fill's error there plus a rounding error: its fully dead
# NRMSE over the fill's (recorded per case) is the sinogram gain a network would need for
# that image.
TOWARD = (0.25, 0.5, 0.75)


# What of the network's repair moves its image: its repair on one bin class, the model-based
# fill on the other (read from the scoring's own repaired files, nothing run again).
UNET_PARTIAL = "unet on partly damaged bins, model fill on fully dead"
UNET_DEAD = "unet on fully dead bins, model fill on partly damaged"


def toward_row(a: float) -> str:
    return f"fully dead bins {a:.0%} of the way from the model fill to the truth"


# The rows this script makes (the rest are the scoring's); the split ones only where the
# scoring's repairs were kept.
WITH_TRUTH = (TRUTH_FILLED, TRUTH_DEAD, *map(toward_row, TOWARD), TRUTH_PARTIAL)
SPLIT = (UNET_PARTIAL, UNET_DEAD)


def case_images(suite, ds, family: str, level: str, pattern: str, scans, image,
                repaired: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Image scores of every row but ``unet`` for the case's first test scan, of the two
    half-truth rows :data:`TRUTH_DEAD` and :data:`TRUTH_PARTIAL`, and of the rows that go
    part of the way to the truth on fully dead bins (:data:`TOWARD`). ``repaired``: the
    scoring's network repair of that scan, if kept; then also ``unet`` (to check against the
    scoring) and the rows :data:`UNET_PARTIAL` and :data:`UNET_DEAD`."""
    from badblock import metrics
    from badblock.evaluate import thin_scan
    from badblock.physics import dead_block_mask, get_scanner, parse_blocks, real_lor_count

    scanner = get_scanner(suite.scanner)
    mask = dead_block_mask(scanner, parse_blocks(suite.patterns[pattern]))
    sens = real_lor_count(scanner).astype(np.float32)
    scan = scans[0]
    damaged = thin_scan(scan.measured, mask, np.random.default_rng(seeds_for(
        suite, "thin", ds.index, family, level, pattern, scan.name)))
    outputs = method_outputs(suite, ds.choices, scan, damaged, repaired, mask, pattern, level,
                             sens, image)
    classes = metrics.bin_classes(mask)
    if repaired is not None:
        for row, cls in ((UNET_PARTIAL, "partial"), (UNET_DEAD, "dead")):
            outputs[row] = np.where(classes[cls], outputs["unet"], outputs["model"])
    for row, cls in ((TRUTH_DEAD, "dead"), (TRUTH_PARTIAL, "partial")):
        outputs[row] = np.where(classes[cls], outputs[TRUTH_FILLED], outputs["model"])
    fill = outputs["model"].astype(np.float64)  # the rows are counts, maybe unsigned
    to_truth = outputs[TRUTH_FILLED].astype(np.float64) - fill
    for a in TOWARD:
        step = fill + a * to_truth
        outputs[toward_row(a)] = metrics.data_consistent(
            np.where(classes["dead"], step, outputs["model"]), damaged, mask)
    scores, _, _ = image.score(scan, damaged, outputs, mask)
    fill_dead = metrics.nrmse_over(outputs["model"], scan.truth, classes["dead"])
    for row in (TRUTH_FILLED, TRUTH_DEAD, *map(toward_row, TOWARD),
                *((UNET_DEAD,) if repaired is not None else ())):
        scores[row]["dead_over_model"] = (
            metrics.nrmse_over(outputs[row], scan.truth, classes["dead"]) / fill_dead)
    return scores


def best_classical(methods: dict, rows: list[str]) -> float:
    """The smallest OSEM body NRMSE of the classical ``rows`` that were reconstructed."""
    return min(methods[r]["osem_nrmse"] for r in rows
               if r in methods and methods[r].get("osem_nrmse") is not None)


def summarise(cases: list[dict], suite_rows: list[str]) -> dict:
    """Per row: OSEM body NRMSE over the best classical answer of each case (the report's
    ratio: the gaps-modelled reconstruction counts; geometric mean and worst), the cases where
    it is no worse than OSEM of every classical *fill* (the target's count, as
    ``quality_docs`` counts it), the same over the model-based fill, and the dead volume's ROI
    bias (range, cases within +-1 %); for the rows made here, their fully dead bins' NRMSE
    over the model fill's (geometric mean)."""
    fills = [r for r in suite_rows if r != IMAGE_CLASSICAL]
    out = {}
    for row in (*WITH_TRUTH, "unet", *SPLIT, COMPLETE):
        ratios, to_fills, to_model, biases = [], [], [], []
        for c in cases:
            m = c["methods"]
            if row not in m:
                continue
            ratios.append(m[row]["osem_nrmse"] / best_classical(m, suite_rows))
            to_fills.append(m[row]["osem_nrmse"] / best_classical(m, fills))
            to_model.append(m[row]["osem_nrmse"] / m["model"]["osem_nrmse"])
            biases.append(m[row]["osem_bias_dead"])
        if not ratios:
            continue
        out[row] = {"cases": len(ratios),
                    "osem_nrmse_ratio_gmean": gmean(ratios),
                    "osem_nrmse_ratio_worst": max(ratios),
                    "no_worse_than_every_classical_fill": sum(r <= 1.0 for r in to_fills),
                    "over_model_gmean": gmean(to_model),
                    "over_model_range": [min(to_model), max(to_model)],
                    "bias_dead_min": min(biases), "bias_dead_max": max(biases),
                    "bias_dead_within_1pct": sum(abs(b) <= 0.01 for b in biases)}
        dead = [c["methods"][row]["dead_over_model"] for c in cases
                if "dead_over_model" in c["methods"].get(row, {})]
        if dead:  # the sinogram gain on fully dead bins behind the row's image
            out[row]["dead_over_model_gmean"] = gmean(dead)
    return out


def _scorings_repair(checkpoint: str, family: str, level: str, pattern: str, scan: str
                     ) -> np.ndarray | None:
    """The network's repair of ``scan`` that the scoring scored, where its work folder kept it
    (``<work>/d<i>/cases/<family>/<level>/<pattern>/repaired``, beside the data set's
    ``train`` folder that holds ``checkpoint``; a relative path is the repository's)."""
    from badblock.io import read_scan

    ckpt = Path(checkpoint)
    ckpt = ckpt if ckpt.is_absolute() else ROOT / ckpt
    path = ckpt.parents[1] / "cases" / family / level / pattern / "repaired" / scan
    return np.asarray(read_scan(path).data) if path.exists() else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="the smoke suite (quality.py --smoke)")
    ap.add_argument("--scoring", help="the suite scoring to compare with (default: "
                                      "bench/results/quality[_smoke].json)")
    ap.add_argument("--work", help="folder for the test scans' simulations (default: "
                                   "badblock-output/image-ceiling[-smoke])")
    ap.add_argument("--out", help="default: bench/results/image_ceiling[_smoke].json")
    ap.add_argument("--cases", type=int, default=0, help="only the first N cases (0 = all)")
    args = ap.parse_args(argv)
    from quality_image import ImageScorer

    from badblock.physics import get_scanner
    from badblock.utils.atomic import atomic_write_json

    t0 = time.perf_counter()
    tag = "_smoke" if args.smoke else ""
    args.scoring = args.scoring or str(RESULTS / f"quality{tag}.json")
    args.out = args.out or str(RESULTS / f"image_ceiling{tag}.json")
    scoring = json.loads(Path(args.scoring).read_text())
    suite = load_suite(DEFAULT_SUITE, smoke=args.smoke)
    if scoring["suite"].get("smoke", False) != args.smoke:
        print(f"image_ceiling: error: {args.scoring} is "
              f"{'a smoke' if scoring['suite'].get('smoke') else 'the full'} suite's scoring; "
              f"{'add' if scoring['suite'].get('smoke') else 'drop'} --smoke", file=sys.stderr)
        return 2
    image = ImageScorer(suite, get_scanner(suite.scanner))
    work = Path(args.work or f"badblock-output/image-ceiling{tag.replace('_', '-')}")
    by_name = {c["case"]: c for c in scoring["cases"]}
    cases, worst_check, missing = [], 0.0, 0
    for d in range(suite.datasets):
        cfg = _config(suite, work / f"d{d}", seeds_for(suite, "train", d))
        # the scoring's own choices (normconv's widths, made on validation scans)
        made = scoring["datasets"][d]
        ds = Dataset(d, cfg, work, Path(made["checkpoint"]), None, 0.0,
                     Choices(d, made["validation_scans"], made["normconv_widths"]))
        for family in suite.cases.families:
            for level in suite.cases.counts:
                scans = None
                for pattern in suite.cases.patterns:
                    name = case_name(d, family, level, pattern)
                    if args.cases and len(cases) >= args.cases:
                        break
                    scans = scans or simulate_tests(suite, ds, family, level, work)
                    repaired = _scorings_repair(made["checkpoint"], family, level, pattern,
                                                scans[0].path.name)
                    missing += repaired is None
                    mine = case_images(suite, ds, family, level, pattern, scans, image,
                                       repaired)
                    theirs = by_name[name]["methods"]
                    checked = (*CHECKED, "unet") if repaired is not None else CHECKED
                    for row in checked:  # the same scan, damage, fill and OSEM as the scoring's
                        rel = abs(mine[row]["osem_nrmse"] / theirs[row]["osem_nrmse"] - 1)
                        worst_check = max(worst_check, rel)
                    methods = {r: {k: theirs[r][k] for k in ("osem_nrmse", "osem_bias_dead")}
                               for r in theirs if theirs[r].get("osem_nrmse") is not None}
                    methods.update({r: mine[r] for r in (*WITH_TRUTH, *SPLIT) if r in mine})
                    cases.append({"case": name, "methods": methods})
                    tf = mine[TRUTH_FILLED]
                    best = best_classical(theirs, classical_rows(scoring, "osem_nrmse"))
                    print(f"[{name}] OSEM body NRMSE / best classical: truth-filled "
                          f"{tf['osem_nrmse'] / best:.4f}, unet "
                          f"{theirs['unet']['osem_nrmse'] / best:.4f}; dead-volume bias "
                          f"truth-filled {100 * tf['osem_bias_dead']:+.2f} %", flush=True)
    if missing:
        print(f"image_ceiling: {missing} of {len(cases)} cases have no repaired scan left in "
              f"the scoring's work folder: rows {UNET_PARTIAL!r} and {UNET_DEAD!r} are over the "
              "others only", file=sys.stderr)
    if worst_check > 1e-3:
        print(f"image_ceiling: the classical rows made again differ from {args.scoring} by up "
              f"to {worst_check:.2%}: not the scoring's scans or settings", file=sys.stderr)
        return 1
    result = {"command": "python bench/image_ceiling.py" + (" --smoke" if args.smoke else ""),
              "scoring": args.scoring,
              "scoring_fingerprint": scoring["fingerprint"],
              "classical_rows_agree_within": worst_check,
              "summary": summarise(cases, classical_rows(scoring, "osem_nrmse")),
              "cases": cases, "wall_s": round(time.perf_counter() - t0, 1)}
    atomic_write_json(Path(args.out), result)
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
