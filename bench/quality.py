"""The quality benchmark: every repair method on a frozen, held-out suite of simulated cases.

    python bench/quality.py                 # the full suite (bench/quality/suite.yaml), ~hours
    python bench/quality.py --smoke         # one data set, one case, a few steps (CI)
    python bench/quality_docs.py            # docs/quality.md from bench/results/quality.json

Why a benchmark and not a ``badblock`` stage: it trains networks, simulates hundreds of scans
and takes hours, and what it produces is a statement about the product (how well the shipped
preset repairs held-out data), not something a user runs on their own scans -- ``badblock
evaluate`` is that stage, and the benchmark scores with the same library functions.

Order (which is what keeps the test cases out of every choice): for each data set, simulate the
training scans, preprocess, train with the preset (:func:`quality_data.prepare_dataset`), make
every other choice on the store's validation scans (:func:`quality_data.choose`), and only then
simulate the test scans (:mod:`quality_cases`) and score. A work folder (``--work``) keeps the
simulations, the stores, the trained networks and one JSON per finished case: a rerun reuses
them (delete the folder to start over). Outputs: the JSON of every case with the aggregates
(``--out``), the per-case bar chart and the image-domain panel (``--figures``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_suite import (
    DEFAULT_SUITE,
    ROOT,
    Suite,
    check_disjoint,
    load_suite,
    relations,
)

from badblock.errors import BadInputError

RESULTS = ROOT / "bench" / "results"


def _fingerprint(suite: Suite, smoke: bool) -> str:
    """What a case record depends on besides the code: the suite's content, the mode and the
    preset's resolved settings (a preset that trains on other data is another benchmark run)."""
    import dataclasses

    from badblock.config import load_config

    preset = dataclasses.asdict(load_config(suite.preset))
    text = json.dumps({"suite": dataclasses.asdict(suite), "smoke": smoke, "preset": preset},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _claim_work(work: Path, fp: str) -> None:
    """Refuse a work folder made for another fingerprint: its simulations, stores and networks
    are reused by folder (a complete one is kept), so they would be another preset's."""
    mark = work / "fingerprint.txt"
    if mark.exists():
        made = mark.read_text().strip()
        if made != fp:
            raise BadInputError(work, f"was made for another suite or preset (fingerprint "
                                      f"{made}, now {fp}): use a fresh --work")
        return
    work.mkdir(parents=True, exist_ok=True)
    mark.write_text(fp + "\n")


def _finite(x):
    import math

    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


def _check_fill_terms(cfg, osem) -> None:
    """Equal terms: a network that corrects the model-based fill is trained and repairs with
    the fill the ``model`` row is scored with (the same OSEM and projector settings)."""
    from badblock.baselines import fill_settings, fill_settings_of

    if not cfg.model.fill_prior:
        return
    mine = fill_settings_of(cfg.fills)
    suite = fill_settings(osem.iterations, osem.subsets, osem.projector)
    if mine != suite:
        raise BadInputError("suite.osem", f"the preset's fills {mine} are not the model row's "
                                          f"OSEM {suite}: the network would start from another "
                                          "fill than the one it is compared with")


def run(suite: Suite, work: Path, *, smoke: bool, threads: int, prepare_only: bool = False,
        log=print) -> dict | None:
    """Run every data set and case of ``suite``; returns the result dict (not yet written).
    ``prepare_only``: stop after every data set's training and choices (nothing of the test
    data exists yet) and return None: what no setting of the repair depends on, made ahead."""
    import dataclasses

    from quality_cases import run_case, simulate_tests
    from quality_data import choose, prepare_dataset
    from quality_image import ImageScorer

    from badblock.inference.predictor import load_predictor
    from badblock.physics import dead_block_mask, get_scanner, parse_blocks
    from badblock.utils.atomic import atomic_write_json
    from badblock.utils.hardware import cpu_description

    t0 = time.perf_counter()
    check_disjoint(suite)
    fp = _fingerprint(suite, smoke)
    _claim_work(work, fp)
    scanner = get_scanner(suite.scanner)
    masks = {p: dead_block_mask(scanner, parse_blocks(b)) for p, b in suite.patterns.items()}
    image = ImageScorer(suite, scanner)
    cases, datasets, panel, reused = [], [], None, 0
    datasets_cfg = []
    overrides = list(suite.smoke.train) if smoke else []
    for d in range(suite.datasets):
        ds = prepare_dataset(suite, d, work, train_overrides=overrides, log=log)
        _check_fill_terms(ds.cfg, suite.smoke.osem if smoke else suite.osem)
        datasets_cfg.append(ds.cfg)
        ds.choices = _cached_choices(work / f"d{d}" / "choices.json", ds.validation, suite)
        if ds.choices is None:
            ds.choices = choose(ds.validation, suite, ds.cfg, work, masks, log=log)
            # The choices are fixed (and written) before the first test scan exists.
            atomic_write_json(work / f"d{d}" / "choices.json", dataclasses.asdict(ds.choices))
        if prepare_only:
            continue
        predictor = load_predictor(ds.checkpoint, "cpu", threads)
        t_cases = time.perf_counter()
        for family in dict.fromkeys(suite.cases.families):
            for level in dict.fromkeys(suite.cases.counts):
                scans = None
                for pattern in dict.fromkeys(suite.cases.patterns):
                    cache = work / f"d{d}" / "cases" / family / level / pattern / "record.json"
                    rec = _cached(cache, fp)
                    reused += rec is not None
                    if rec is None:
                        scans = scans or simulate_tests(suite, ds, family, level, work)
                        rec = run_case(suite, ds, predictor, scans, family, level, pattern,
                                       work, image, log=log)
                        _save_panel(cache.with_name("panel.npz"), rec.pop("_panel", None))
                        atomic_write_json(cache, {"fingerprint": fp, "record": _finite(rec)})
                    if panel is None and rec["case"] == _panel_case(suite):
                        panel = _load_panel(cache.with_name("panel.npz"), rec["case"])
                    cases.append(rec)
        # times as recorded when each part was made (a rerun reuses the work folder)
        mine = [c for c in cases if c["dataset"] == d]
        datasets.append({"dataset": d, "train_seed": ds.cfg.simulate.seed,
                         "checkpoint": str(ds.checkpoint),
                         "train_s": _train_seconds(ds.folder) or ds.train_seconds,
                         "choices_s": ds.choices.seconds,
                         "cases_s": round(sum(c.get("seconds") or 0.0 for c in mine), 1),
                         "this_run_cases_s": round(time.perf_counter() - t_cases, 1),
                         "validation_scans": ds.choices.validation_ids,
                         "normconv_widths": ds.choices.normconv_widths,
                         "best_epoch": _best_epoch(ds.folder)})
    if prepare_only:
        return None
    import torch

    result = {
        "suite": {**dataclasses.asdict(suite), "smoke": smoke},
        "fingerprint": fp,
        "preset_model": dataclasses.asdict(datasets_cfg[0].model) if datasets_cfg else None,
        # what the networks trained on: the docs say which families the suite's are not
        "preset_data": {"phantom": datasets_cfg[0].simulate.phantom,
                        "counts_range": datasets_cfg[0].simulate.counts_range}
        if datasets_cfg else None,
        "command": "python bench/quality.py" + (" --smoke" if smoke else ""),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "python": platform.python_version(),
                    # train.amp / train.channels_last auto follow it: bf16 autocast and
                    # channels-last training on a CPU with bf16 units
                    "cpu": cpu_description()},
        "relations": relations(suite),
        "datasets": datasets, "cases": cases, "wall_s": round(time.perf_counter() - t0, 1),
        "compute_s": round(sum(d["train_s"] + d["choices_s"] + d["cases_s"] for d in datasets), 1),
        "cases_reused": reused,
    }
    return result, panel


def _panel_case(suite: Suite) -> str:
    """The case the image-domain panel shows: data set 0, the last family, count level and
    pattern of the suite (the suite orders them from easiest to hardest)."""
    from quality_cases import case_name

    c = suite.cases
    return case_name(0, c.families[-1], c.counts[-1], c.patterns[-1])


def _save_panel(path: Path, panel: dict | None) -> None:
    import numpy as np

    from badblock.utils.atomic import atomic_path

    if panel is None:
        return
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, titles=np.array(list(panel)), **{f"i{k}": np.asarray(v, np.float32)
                                                     for k, v in enumerate(panel.values())})


def _load_panel(path: Path, case: str) -> dict | None:
    import numpy as np

    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        titles = [str(t) for t in z["titles"]]
        return {"case": case, "images": {t: z[f"i{k}"] for k, t in enumerate(titles)}}


def _train_seconds(folder: Path) -> float | None:
    """The training's own time: the epoch times its log recorded (None without a log)."""
    log = folder / "log.jsonl"
    if not log.exists():
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return round(sum(r.get("epoch_time_s") or 0.0 for r in rows if not r.get("partial")), 1)


def _best_epoch(folder: Path) -> int | None:
    """The epoch of the run's best checkpoint (what repair used), from its log."""
    log = folder / "log.jsonl"
    if not log.exists():
        return None
    best, epoch = float("inf"), None
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("partial"):
            continue
        v = rec.get("nrmse_net")  # what the trainer chose checkpoint_best.pt by
        if v is not None and v < best:
            best, epoch = v, rec.get("epoch")
    return epoch


def _cached_choices(path: Path, validation, suite: Suite):
    """The choices a previous run of this work folder fixed, if they were made on the same
    validation scans for every (pattern, count level) of the suite; else None."""
    from quality_data import Choices

    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        choices = Choices(**data)
    except (OSError, ValueError, TypeError):
        return None
    keys = {f"{p}/{c}" for p in suite.cases.patterns for c in suite.cases.counts}
    if list(choices.validation_ids) != list(validation.ids) or (
            "normconv" in suite.baselines and not keys <= set(choices.normconv_widths)):
        return None
    return choices


def _cached(path: Path, fp: str) -> dict | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data["record"] if data.get("fingerprint") == fp else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default=str(DEFAULT_SUITE), help="suite file (default: %(default)s)")
    ap.add_argument("--smoke", action="store_true", help="one data set, one case, few steps")
    ap.add_argument("--work", help="work folder (default badblock-output/quality[-smoke])")
    ap.add_argument("--out", help="result JSON (default bench/results/quality[_smoke].json)")
    ap.add_argument("--figures", help="figure folder (default docs/img; smoke: the JSON's)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--prepare-only", action="store_true",
                    help="simulate, train and choose for every data set, score no case (a "
                         "later run reuses the work folder)")
    args = ap.parse_args(argv)
    tag = "_smoke" if args.smoke else ""
    out = Path(args.out or RESULTS / f"quality{tag}.json")
    work = Path(args.work or Path("badblock-output") / f"quality{tag.replace('_', '-')}")
    figures = Path(args.figures or (out.parent if args.smoke else ROOT / "docs" / "img"))
    try:
        suite = load_suite(args.suite, smoke=args.smoke)
        import torch

        if args.threads > 0:
            torch.set_num_threads(args.threads)
        work.mkdir(parents=True, exist_ok=True)
        done = run(suite, work, smoke=args.smoke, threads=args.threads,
                   prepare_only=args.prepare_only)
    except BadInputError as exc:
        print(f"quality: error: {exc.message}", file=sys.stderr)
        return 2
    if done is None:
        print(f"quality: {suite.datasets} data set(s) trained and their choices made in {work}; "
              "no case scored")
        return 0
    result, panel = done
    from quality_report import aggregate, draw_bars, draw_panel, text_summary

    from badblock.utils.atomic import atomic_write_json

    result["aggregate"] = aggregate(result)
    figs = {"bars": draw_bars(result, figures / f"quality{tag}_bars.png")}
    if panel is not None:
        figs["panel"] = draw_panel(panel, figures / f"quality{tag}_panel.png")
    result["figures"] = {k: os.path.relpath(v, ROOT) if v else None for k, v in figs.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, _finite(result))
    print(text_summary(result))
    print(f"quality: {len(result['cases'])} cases in {result['wall_s']:.0f} s on "
          f"{os.cpu_count()} CPU core(s) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
