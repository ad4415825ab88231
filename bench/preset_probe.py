"""Validation probes of changes to the preset, on probe data sets: never the suite's.

    python bench/preset_probe.py --only mixed mixed_deadhalf mixed_deadfill mixed96 \
        mixed96_deadhalf mixed96_deadfill                 # ~50 min on 2 cores
    python bench/preset_probe.py --only mixed96_selfcheck  # ~40 min (the networks kept)
    python bench/preset_probe.py --only mixed96_selfcheck mixed96_selfcheck_z0.5 \
        mixed96_selfcheck_z1 mixed96_selfcheck_z2 mixed96_selfcheck_z3  # the self-check's z
    python bench/preset_probe.py --only plain count --baseline plain
    python bench/preset_probe.py --tiny --out F         # one small data set, a few steps (CI)

Variants (:data:`VARIANTS`), each against ``--baseline`` (default ``mixed96``, the ``mini``
preset's training, the suite's ``preset``; ``mixed`` until mixed96 passed against it):

- ``plain``: 16 epochs (the demo's budget), random phantoms.
- ``count``: ``model.count_channel`` (the count level as an input). The preset's network
  corrects the model-based fill well at the demo's counts and over-smooths at 8x (the
  benchmark's findings, docs/training.md): its input is normalised by the stack's mean counts,
  so 0.25x and 10x the dose look alike to it, though their Poisson noise asks for different
  smoothing; the channel hands it ``ln scale``, what the normalisation takes away.
- ``long`` / ``count_long``: 48 epochs (learning rate halved every 16) instead of 16: the
  validation error of the 16-epoch runs is still falling at their last epoch.
- ``mixed``: ``long`` trained on scans of the random, textured and lesions families in equal
  shares (``simulate.phantom`` a list) instead of random phantoms alone: the suite's worst
  families were the ones the network never saw. The variants above train on random phantoms;
  each training data gets its own store and fills (``d<d>-random``, ``d<d>-mixed``), of the
  same seeds, sizes and validation split.
- ``mixed96``: ``mixed`` trained 96 epochs (halved every 32): the kept epochs of ``mixed``
  fall at the end of its 48.
- ``mixed96_draws16`` / ``mixed96_e768``: ``mixed96`` trained on 16 damage draws (with their
  fills) per training scan instead of 4, or on 768 samples an epoch instead of 384. Every
  target still missed is about the fully dead bins (bench/image_ceiling.py: the truth there
  alone meets both image targets), whose correction the network learns from 48 dead-block
  sets and their fills in all, and the suite's three networks differ most there (fully dead
  0.999, 0.992, 0.965 x the best classical method). The general rule below decides; each
  record also holds the fully dead class.

  python bench/preset_probe.py --only mixed96 mixed96_draws16 mixed96_e768 \
      --out bench/results/preset_probe/dead-bins      # ~90 min on 2 cores
- ``<network>_deadhalf`` / ``<network>_deadfill``: the network of ``mixed`` or ``mixed96``
  repaired with the output rule ``model.dead_weight`` 0.5 / 0 (fully dead bins halfway to the
  fill / the fill itself, the network elsewhere): on the suite the network was worse than the
  fill on fully dead bins (1.008x). The rule changes no training: these reuse the network.
- ``<network>_selfcheck``: the network of ``mixed`` or ``mixed96`` repaired with repair's
  self-check (:mod:`badblock.inference.selfcheck`): its correction weighted, per scan and bin
  class, by what the scan's own counts support; on the suite it was worse than every classical
  method in 15 of 96 cases, mostly at 8x counts and on vessels. It reuses the network.
- ``<network>_selfcheck_z<z>``: ``<network>_selfcheck`` with each weight lowered by ``z`` of
  its standard errors (its lower confidence bound, :data:`badblock.inference.selfcheck.Z`),
  z of 0.5, 1, 2, 3; ``<network>_selfcheck`` is ``z = 0``. On the suite (sixth scoring) the
  self-check's repair was worse than the fill on fully dead bins in 5 of 96 cases (up to
  1.010x): the dead-bin weight's estimate is noisy (it moved by 0.12 between the two scans of
  one case) and an overshoot costs. The self-check runs once a scan; each z's weights come
  from its estimate and standard error, and its repair is the output rule with them applied
  to the network's own output (one more network pass a scan; checked, on every scan, to give
  the self-check's own repair bit for bit with its weights).
- ``<network>_selfcheck_z<z>_dead<zd>``: z of 1 or 2 on partly damaged bins, on fully dead
  ones ``zd`` of 2 or 3, or ``fill`` (weight 0: the fill there). On the suite's seventh
  scoring (z = 1) the repair was worse than the fill on fully dead bins in 11 of 96 cases (by
  at most 0.24 %), on partly damaged bins in none; one lost case's scan had an estimate of
  1.75 with a standard error of 0.09. Every self-check record also holds, per scan, the weight
  the truth picks on the real damaged bins (``truth_weight``, evaluation only) and the
  summary how the estimate stands to it (``self_check_bias``): noise or bias.

  python bench/preset_probe.py --only mixed96_selfcheck mixed96_selfcheck_z1 \
      mixed96_selfcheck_z2 mixed96_selfcheck_z3 mixed96_selfcheck_z1_dead2 \
      mixed96_selfcheck_z1_dead3 mixed96_selfcheck_z1_deadfill mixed96_selfcheck_z2_dead3 \
      mixed96_selfcheck_z2_deadfill --baseline mixed96_selfcheck \
      --out bench/results/preset_probe/self-check-cells

Data: *probe* data sets, made exactly as the benchmark makes its data sets
(:mod:`quality_data`: the variant's phantoms, ``train_scans`` scans at the preset's doses
``simulate.counts_range``, the store's validation split, ``badblock fills``), but from the root
seed ``--seed`` (default 4040), not the suite's 8080: no scan here is a suite scan. Each kept
checkpoint (``checkpoint_best.pt``, chosen without the truth on its own store's validation
scans) repairs the same scored scans: every validation scan of the store simulated again as a
phantom of each family ``random``, ``textured``, ``lesions``, ``vessels`` (the suite's family
parameters; 16 scans a data set), at each count level of the suite (``demo`` 1x, ``high`` 8x)
and damaged with each of the suite's dead-block patterns as :func:`quality_data.choose`
damages them. The score is the damaged-bin NRMSE against the noiseless truth (data-consistent,
rounded as stored), as a ratio to the model-based fill the network starts from (made with the
checkpoint's OSEM settings). Records scored otherwise are not compared with these
(results/preset_probe/random-validation: random phantoms only, before ``mixed``;
one-family-per-scan: the j-th validation scan as one family, 4 scans a data set).

The rule, fixed before the runs: a variant goes into the preset when its geometric-mean ratio
over every (data set, level, pattern) is lower than the baseline's, lower on every probe data
set, and the upper end of the 95 % bootstrap interval of its ratio to the baseline (scored
scans resampled within each data set) is below 1 -- the margin exceeds what the choice of
scans could make; of several such, the lowest. The self-check's ``z`` (the ``_z`` and
``_dead`` variants and ``<network>_selfcheck``, z = 0) is chosen by a rule of its own, fixed
before the runs, for the target it is for (a repair no worse than its prior on either bin
class in every case): of the variants no worse than the fill on partly damaged and on
fully dead bins in every cell of the suite's size (data set, family, level, pattern and a
pair of scans; the class NRMSE the pair's mean, as the suite averages a case's two scans), the
one of the lowest ratio to the fill overall; if none is, the one worse in the fewest cells,
ties to the lower ratio. (Until the seventh scoring the cells held the 4 scans of a (data
set, family, level, pattern), twice a case's, and the choice was the smallest z: a loss on 2
scans averaged away over 4, and z = 1, chosen that way, left 11 suite cases worse on fully
dead bins.)
Writes one record per variant under
bench/results/preset_probe/ and their summary (``summary.json``); docs/training.md quotes it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SHORT = ["train.epochs=16", "optim.step_size=8"]
LONG = ["train.epochs=48", "optim.step_size=16"]
LONGER = ["train.epochs=96", "optim.step_size=32"]
# the training data of each variant, spelled out too: (name, settings); the store of
# data set d and data name k is d<d>-<k>
RANDOM = ("random", ["simulate.phantom=random"])
MIXED = ("mixed", ["simulate.phantom=random,textured,lesions"])
MIXED_DRAWS16 = ("mixed-draws16", [*MIXED[1], "fills.draws=16"])


@dataclasses.dataclass(frozen=True)
class Variant:
    """``what`` it is; ``sets``: its training settings; ``data``: its training data (name,
    settings); ``dead_weight``: the repair's output rule on fully dead bins
    (``model.dead_weight``, set on the loaded predictor: it changes no training);
    ``network``: the variant whose trained network it repairs with ("" = its own);
    ``self_check``: repair's self-check (``repair.self_check``: the correction weighted per
    scan by what its own counts support)."""

    what: str
    sets: tuple[str, ...]
    data: tuple[str, list[str]]
    dead_weight: float = 1.0
    network: str = ""
    self_check: bool = False
    z: float = 0.0
    z_dead: float | None = None  # the fully dead class's z (None: z; inf: the fill there)


def _rule(base: str, weight: float) -> Variant:
    v = VARIANTS[base]
    how = {0.5: "halfway between the fill and the network", 0.0: "the fill itself"}[weight]
    return Variant(f"{base}, repaired with {how} on fully dead bins (model.dead_weight="
                   f"{weight:g}), the network elsewhere", v.sets, v.data, weight, base)


# every variant spells out what it sets, so that a rerun means the same after the preset moves
VARIANTS: dict[str, Variant] = {
    "plain": Variant("the preset before: the fill corrected, the count level normalised away, "
                     "16 epochs (the demo's budget), random phantoms",
                     ("model.count_channel=false", *SHORT), RANDOM),
    "count": Variant("+ ln of the normaliser (the count level) as a constant input channel",
                     ("model.count_channel=true", *SHORT), RANDOM),
    "long": Variant("plain trained 48 epochs, the learning rate halved every 16",
                    ("model.count_channel=false", *LONG), RANDOM),
    "count_long": Variant("count, trained 48 epochs", ("model.count_channel=true", *LONG),
                          RANDOM),
    "mixed": Variant("long, trained on the random, textured and lesions families in equal "
                     "shares instead of random alone (the preset before mixed96)",
                     ("model.count_channel=false", *LONG), MIXED),
    "mixed96": Variant("mixed trained 96 epochs, the learning rate halved every 32 (the preset "
                       "now)",
                       ("model.count_channel=false", *LONGER), MIXED),
    # the fully dead bins hold every missed target (docs/training.md): the network learns
    # their correction from the training scans' fills, 4 damage draws a scan (48 dead-block
    # sets in all), in 384 samples an epoch
    "mixed96_draws16": Variant("mixed96 trained on 16 damage draws with their fills per "
                               "training scan instead of 4 (fills.draws)",
                               ("model.count_channel=false", *LONGER), MIXED_DRAWS16),
    "mixed96_e768": Variant("mixed96 with 768 samples an epoch instead of 384 (data.epoch_size):"
                            " twice the steps and samples",
                            ("model.count_channel=false", *LONGER, "data.epoch_size=768"),
                            MIXED),
}
for _base in ("mixed", "mixed96"):
    VARIANTS[f"{_base}_deadhalf"] = _rule(_base, 0.5)
    VARIANTS[f"{_base}_deadfill"] = _rule(_base, 0.0)
    VARIANTS[f"{_base}_selfcheck"] = Variant(
        f"{_base}, repaired with the self-check: the correction on partly damaged and on fully "
        "dead bins weighted per scan by what the scan's own counts support "
        "(repair.self_check)", VARIANTS[_base].sets, MIXED, network=_base, self_check=True)
for _base in ("mixed", "mixed96"):
    for _z in (0.5, 1, 2, 3):
        VARIANTS[f"{_base}_selfcheck_z{_z:g}"] = dataclasses.replace(
            VARIANTS[f"{_base}_selfcheck"], what=f"{_base}_selfcheck with each correction "
            f"weight lowered by {_z:g} standard errors of its estimate", z=float(_z))
    # the dead-bin class alone lowered further, or left at the fill (the suite's seventh
    # scoring: losses on fully dead bins only, docs/training.md)
    for _z, _zd in itertools.product((1, 2), (2, 3, math.inf)):
        _name = "fill" if _zd == math.inf else f"{_zd:g}"
        VARIANTS[f"{_base}_selfcheck_z{_z:g}_dead{_name}"] = dataclasses.replace(
            VARIANTS[f"{_base}_selfcheck"], what=f"{_base}_selfcheck with the weight on partly "
            f"damaged bins lowered by {_z:g} standard errors of its estimate, on fully dead "
            + ("bins 0 (the fill)" if _zd == math.inf else f"bins by {_zd:g}"), z=float(_z),
            z_dead=float(_zd))
# The scans every variant is scored on: each validation scan of a data set's store simulated
# again as a phantom of every family of SCORED_FAMILIES (the suite's parameters) -- the same
# scans for every variant, whatever families it trained on; vessels none of them trains on.
SCORED_FAMILIES = ("random", "textured", "lesions", "vessels")
SCORED_ON = ("validation scans of the store, each as a phantom of family "
             + ", ".join(SCORED_FAMILIES))
# bootstrap resamples of the scored scans for the margin's interval (summarise)
RESAMPLES = 2000


def train_variants(suite, d: int, work: Path, extra: list[str], variants: list[str],
                   log=print) -> tuple[dict, object, object]:
    """Make probe data set ``d``'s store and fills once per training data (as the suite makes
    its own, under ``d<d>-<data name>``), then train each network the variants need on its
    store (a variant with ``network`` repairs with that variant's); returns ({variant: run
    folder}, the validation scans, a config of the data set)."""
    from quality_data import ValidationScans, _config, prepare_store
    from quality_suite import seeds_for

    from badblock.train.checkpoint import FINAL
    from badblock.train.loop import train

    stores, runs = {}, {}
    for name in dict.fromkeys(VARIANTS[n].network or n for n in variants):
        v = VARIANTS[name]
        data, settings = v.data
        if data not in stores:
            cfg, store, sim = prepare_store(suite, d, work, settings + extra, log, name=data)
            stores[data] = (cfg, ValidationScans.from_store(d, store.store, sim))
        # the smoke run's few steps (extra) outrank the variant's epochs
        vcfg = _config(suite, Path(stores[data][0].run.output),
                       seeds_for(suite, "train", d),
                       settings + list(v.sets) + extra + ["data.store=store", f"train.run={name}",
                                                          "train.tensorboard=false"])
        t0 = time.perf_counter()
        runs[name] = Path(train(vcfg))  # a finished run is kept (rerun = reuse)
        if not (runs[name] / FINAL).exists():  # stopped by a signal: it resumes on a rerun
            raise RuntimeError(f"data set {d} {name}: training stopped before its last epoch")
        log(f"[preset_probe] data set {d} {name}: trained in {time.perf_counter() - t0:.0f} s")
    (cfg, validation), *others = stores.values()
    for _, v in others:
        if v.ids != validation.ids:
            raise RuntimeError(f"data set {d}: the stores' validation splits differ "
                               f"({validation.ids} and {v.ids}): the variants would not compare")
    return {n: runs[VARIANTS[n].network or n] for n in variants}, validation, cfg


def scored_scans(suite, d: int, validation, cfg, work: Path, level: str) -> list:
    """(path, scan, truth, mu) of each scan the variants are scored on at count ``level``:
    every validation scan as a phantom of every family of :data:`SCORED_FAMILIES`, family by
    family (kept when complete, as the suite's simulations are)."""
    from quality_data import simulate_folder
    from quality_suite import seeds_for

    from badblock.io import read_scan
    from badblock.io.naming import mu_sibling, truth_sibling

    factor = float(suite.count_levels[level])
    out = []
    for family in SCORED_FAMILIES:
        folder = simulate_folder(cfg, work / f"d{d}" / "sim" / f"val@{level}-{family}",
                                 scans=suite.train_scans, counts=factor * cfg.simulate.counts,
                                 seed=seeds_for(suite, "train", d), family=family,
                                 params=suite.families.get(family, {}))
        for path in validation.paths():
            path = folder / path.name
            out.append((path, read_scan(path), np.asarray(read_scan(truth_sibling(path)).data,
                                                          np.float32),
                        np.load(mu_sibling(path), allow_pickle=False)))
    return out


def score_variants(suite, d: int, folders: dict, validation, cfg, work: Path,
                   threads: int, log=print) -> dict:
    """Damaged-bin NRMSE of each variant's kept checkpoint (with its output rule) and of the
    model-based fill on the scored scans (:func:`scored_scans`) at every (level, pattern) of
    the suite: per bin class the mean over the scans, ``scans`` the all-bin NRMSE of each
    scan (what :func:`summarise` resamples) and, for a self-check variant, ``weights`` the
    correction weights it took on each scan."""
    from quality_suite import seeds_for

    from badblock import metrics
    from badblock.evaluate import thin_scan
    from badblock.inference.predictor import load_predictor
    from badblock.io import read_scan, write_scan
    from badblock.physics import dead_block_mask, get_scanner, parse_blocks
    from badblock.repair import repair_scan, scan_fill_for
    from badblock.train.loop import BEST

    scanner = get_scanner(suite.scanner)
    predictors = {}
    for n, f in folders.items():
        predictors[n] = load_predictor(f / BEST, "cpu", threads)
        predictors[n].dead_weight = VARIANTS[n].dead_weight
    first = next(iter(predictors.values()))
    if len({json.dumps(p.data.get("fill"), sort_keys=True) for p in predictors.values()}) > 1:
        raise RuntimeError(f"data set {d}: the networks were trained on fills of other "
                           "settings: one fill would not be every network's starting point")
    out = {}
    for level in dict.fromkeys(suite.cases.counts):
        scans = scored_scans(suite, d, validation, cfg, work, level)
        for pattern in dict.fromkeys(suite.cases.patterns):
            mask = dead_block_mask(scanner, parse_blocks(suite.patterns[pattern]))
            rows = {n: [] for n in ["model", *predictors]}
            weights = {n: [] for n in predictors if VARIANTS[n].self_check}
            estimates = {n: [] for n in weights}
            for i, (path, scan, truth, mu) in enumerate(scans):
                damaged = thin_scan(np.asarray(scan.data), mask, np.random.default_rng(
                    seeds_for(suite, "thin", d, "validation", pattern, level, str(i))))
                case = work / f"d{d}" / "val-repairs" / level / pattern
                dam = read_scan(write_scan(case / "damaged" / path.name, damaged, scan.header,
                                           force=True))
                # the fill each network starts from, made once: the model row and every
                # network's input (all trained on fills of the same settings, checked above)
                fill = scan_fill_for(first, dam, mask, mu)
                got = {"model": metrics.data_consistent(fill, damaged, mask)}
                checks = {}  # network: (its self-check on this scan, its own output o)
                for n, pred in predictors.items():
                    v, net = VARIANTS[n], VARIANTS[n].network or n
                    if not (v.self_check and net in checks):  # a repair of its own
                        (case / n).mkdir(parents=True, exist_ok=True)
                        done = repair_scan(dam, mask, pred, case / n / path.name, force=True,
                                           mu=mu, fill=fill, self_check=v.self_check,
                                           damage=(parse_blocks(suite.patterns[pattern]), []))
                        got[n] = metrics.data_consistent(
                            np.asarray(read_scan(case / n / path.name).data), damaged, mask)
                        if v.self_check:
                            checks[net] = _checked(done["self_check"], got[n], path, dam, mask,
                                                   pred, fill, mu, case, damaged)
                            checks[net] += (truth_weights(checks[net][1], fill, truth, mask),)
                    if v.self_check:  # the same self-check at this variant's z
                        check, own = checks[net][:2]
                        want = _lowered(check, v.z, v.z_dead)
                        if n not in got or want != check["weights"]:
                            got[n] = metrics.data_consistent(_weighted(own, fill, mask, want),
                                                             damaged, mask)
                        weights[n].append(want)
                        estimates[n].append({"estimate": check["estimate"], "se": check["se"],
                                             "truth_weight": checks[net][2]})
                for n, x in got.items():
                    rows[n].append({c: v["nrmse"] for c, v in
                                    metrics.damaged_scores(x, truth, mask).items()})
            key = f"{level}/{pattern}"
            per = len(scans) // len(SCORED_FAMILIES)  # scans family by family
            out[key] = {n: {**{c: float(np.mean([r[c] for r in rs])) for c in rs[0]},
                            "scans": [float(r["all"]) for r in rs],
                            "scan_classes": [{c: float(r[c]) for c in ("partial", "dead")}
                                             for r in rs],
                            "per_family": {fam: {c: float(np.mean([r[c] for r in
                                                                   rs[j * per:(j + 1) * per]]))
                                                 for c in ("partial", "dead")}
                                           for j, fam in enumerate(SCORED_FAMILIES)},
                            **({"weights": weights[n], "estimates": estimates[n]}
                               if n in weights else {})}
                        for n, rs in rows.items()}
            log(f"[preset_probe] data set {d} {key}: damaged-bin NRMSE " + ", ".join(
                f"{n} {v['all']:.4f}" for n, v in out[key].items()))
    return out


def _lowered(check: dict, z: float, z_dead: float | None = None) -> dict:
    """The weights of a self-check's summary ``check`` lowered by ``z`` standard errors
    (``z_dead`` on fully dead bins, None: ``z``; inf: weight 0 there)."""
    from badblock.inference.selfcheck import lowered

    zs = {"partial": z, "dead": z if z_dead is None else z_dead}
    return {c: lowered(check["estimate"][c], check["se"][c], zs[c]) for c in check["weights"]}


def truth_weights(own: np.ndarray, fill: np.ndarray, truth: np.ndarray,
                  mask: np.ndarray) -> dict:
    """Per bin class, the weight the truth picks for the rule ``p + w d`` on the scan's real
    damaged bins: ``w* = sum (lam - p) d / sum d^2`` (``d = o - p``; 1 where ``d`` is 0), what
    the self-check's estimate stands in for. For the record only: no choice reads it."""
    from badblock.metrics import DEAD_EPS

    m = np.asarray(mask)
    out = {}
    for c, sel in (("partial", (m > 0) & (m < 1.0 - DEAD_EPS)), ("dead", m >= 1.0 - DEAD_EPS)):
        p = np.asarray(fill, np.float64)[:, sel]
        d = np.asarray(own, np.float64)[:, sel] - p
        dd = float((d * d).sum())
        out[c] = float(((np.asarray(truth, np.float64)[:, sel] - p) * d).sum() / dd) \
            if dd > 0 else 1.0
    return out


def _checked(check: dict, repaired: np.ndarray, path: Path, dam, mask, pred, fill, mu,
             case: Path, damaged: np.ndarray) -> tuple[dict, np.ndarray]:
    """(the self-check's summary, the network's own output) of one scan's self-checked repair
    ``repaired``, after checking that the output rule with the check's weights gives that
    repair bit for bit: the other z's repairs are made from the same two, or none is trusted."""
    from badblock import metrics

    if not check.get("ran"):
        raise RuntimeError(f"{path}: the self-check did not run: {check.get('why')}")
    own = _own_output(dam, mask, pred, fill, mu, case / "own" / path.name)
    same = metrics.data_consistent(_weighted(own, fill, mask, check["weights"]), damaged, mask)
    if not np.array_equal(same, repaired):
        raise RuntimeError(f"{path}: the weighted rule from the network's own output differs "
                           f"from repair's in {int((same != repaired).sum())} bins")
    return check, own


def _own_output(dam, mask, pred, fill, mu, path: Path) -> np.ndarray:
    """The network's own output ``o`` (weight 1, float32, unrounded) on the damaged scan
    ``dam``'s damaged bins (its counts elsewhere): the repair of a float32 copy of it."""
    from badblock.io import read_scan, write_scan
    from badblock.repair import repair_scan

    own = copy.copy(pred)
    own.partial_weight = own.dead_weight = 1.0
    src = write_scan(path.parent / "damaged" / path.name,
                     np.asarray(dam.data, np.float32), dam.header, force=True)
    (path.parent / "out").mkdir(parents=True, exist_ok=True)
    repair_scan(read_scan(src), mask, own, path.parent / "out" / path.name, force=True, mu=mu,
                fill=fill, self_check=False)
    return np.asarray(read_scan(path.parent / "out" / path.name).data, np.float32)


def _weighted(own: np.ndarray, fill: np.ndarray, mask: np.ndarray, w: dict) -> np.ndarray:
    """The output rule with the weights ``w`` per bin class on the network's own output
    ``own`` and the fill (:func:`badblock.inference.predictor.weigh`, the predictor's own):
    what repair rounds and writes with those weights."""
    import torch

    from badblock.inference.predictor import weigh

    f = torch.from_numpy(np.asarray(mask, np.float32))
    return weigh(torch.from_numpy(own), torch.from_numpy(np.asarray(fill, np.float32)), f,
                 w["partial"], w["dead"]).numpy()


def summarise(records: dict, baseline: str = "mixed96", seed: int = 0) -> dict:
    """Geometric-mean ratios to the model-based fill of each variant's record: overall, per
    data set, per level and per bin class; against ``baseline``, the ratio of the two
    (``to_baseline``) with its 95 % interval over :data:`RESAMPLES` bootstrap draws of the
    scored scans (the same draw for every cell of a data set: a scan is scored in all of them);
    and the rule's choice (module docstring)."""
    from quality_report import gmean

    out = {}
    for n, rec in records.items():
        sets = rec["datasets"]

        def ratio(d, key, cls="all", sets=sets, n=n):
            return sets[d]["scores"][key][n][cls] / sets[d]["scores"][key]["model"][cls]

        cells = [(d, k) for d in sets for k in sets[d]["scores"]]
        levels = list(dict.fromkeys(k.split("/")[0] for _, k in cells))
        out[n] = {"ratio": gmean(ratio(d, k) for d, k in cells),
                  "per_dataset": {d: gmean(ratio(d, k) for dd, k in cells if dd == d)
                                  for d in sets},
                  "per_level": {lv: gmean(ratio(d, k) for d, k in cells
                                          if k.startswith(lv + "/")) for lv in levels},
                  "per_class": {c: gmean(ratio(d, k, c) for d, k in cells)
                                for c in ("partial", "dead")},
                  "kept_epoch": {d: sets[d]["kept_epoch"] for d in sets}}
    nets = list(dict.fromkeys(VARIANTS[n].network for n in records
                              if n in VARIANTS and VARIANTS[n].self_check))
    winners = []
    if baseline in out:
        p = out[baseline]
        for n, v in out.items():
            if n == baseline or set(v["per_dataset"]) != set(p["per_dataset"]):
                continue
            v["to_baseline"], v["to_baseline_95"] = _paired(records[n], records[baseline], n,
                                                            baseline, seed)
            if (v["ratio"] < p["ratio"] and v["to_baseline_95"][1] < 1.0
                    and all(v["per_dataset"][d] < p["per_dataset"][d] for d in p["per_dataset"])):
                winners.append(n)
    return {"variants": out, "baseline": baseline, "passing": winners,
            "choice": min(winners, key=lambda n: out[n]["ratio"]) if winners else baseline,
            "self_check_z": {net: choose_z(records, net, {n: v["ratio"] for n, v in out.items()})
                             for net in nets},
            "self_check_bias": {net: weight_bias(records, net) for net in nets}}


def _cells(n_scans: int, size: int = 2) -> list[list[int]]:
    """The scans of a scored (level, pattern) in cells of the suite's size: family by family
    (:func:`scored_scans`), ``size`` consecutive scans each (a suite case has two)."""
    per = n_scans // len(SCORED_FAMILIES)
    return [list(range(j * per + a, j * per + min(a + size, per)))
            for j in range(len(SCORED_FAMILIES)) for a in range(0, per, size)]


def choose_z(records: dict, network: str, ratios: dict | None = None) -> dict:
    """The self-check's ``z`` (and its fully dead class's) by its rule (module docstring) over
    the records of ``network``'s self-check variants: per variant the cells of the suite's size
    (``d<d>/<family>/<level>/<pattern>/<pair>``: two scans, the class NRMSE their mean, as the
    suite averages a case's) where its class NRMSE exceeds the fill's, with the ratios; the
    choice: of the variants worse in no cell the lowest ``ratios`` (NRMSE / fill over every
    cell, :func:`summarise`), else the fewest cells worse, ties to the lower ratio. The records
    must come from the same trained networks (the same kept epochs), else no choice is made."""
    fam = {n: r for n, r in records.items() if n in VARIANTS and VARIANTS[n].self_check
           and VARIANTS[n].network == network
           and all("scan_classes" in c[n] for ds in r["datasets"].values()
                   for c in ds["scores"].values())}
    ratios = ratios or {}
    out = {}
    for n, rec in fam.items():
        worse = {"partial": {}, "dead": {}}
        cells = 0
        for d, ds in rec["datasets"].items():
            for key, cell in ds["scores"].items():
                mine, fill = cell[n]["scan_classes"], cell["model"]["scan_classes"]
                for j, idx in enumerate(_cells(len(mine))):
                    family = SCORED_FAMILIES[idx[0] // (len(mine) // len(SCORED_FAMILIES))]
                    cells += 1
                    for c in worse:
                        r = (np.mean([mine[i][c] for i in idx])
                             / np.mean([fill[i][c] for i in idx]))
                        if r > 1.0:
                            worse[c][f"d{d}/{family}/{key}/{j}"] = round(float(r), 6)
        out[n] = {"z": VARIANTS[n].z, "z_dead": _z_dead(VARIANTS[n]) or VARIANTS[n].z,
                  "worse": worse, "cells": cells, "ratio": ratios.get(n),
                  "cells_worse": sum(len(w) for w in worse.values())}
    epochs = {json.dumps({d: ds["kept_epoch"] for d, ds in r["datasets"].items()},
                         sort_keys=True) for r in fam.values()}
    if not out or len(epochs) > 1:
        return {"variants": out, "choice": None,
                "why": "no records with per-scan classes" if not out
                else "the records come from other trainings"}
    choice = min(out, key=lambda n: (out[n]["cells_worse"], out[n]["ratio"] or 0.0))
    return {"variants": out, "choice": choice, "z": out[choice]["z"],
            "z_dead": out[choice]["z_dead"], "meets": out[choice]["cells_worse"] == 0}


def _z_dead(v: Variant):
    """The fully dead class's z as the records write it: None (the variant's z), a number, or
    ``"fill"`` (weight 0; JSON has no infinity)."""
    return None if v.z_dead is None else "fill" if v.z_dead == math.inf else v.z_dead


def weight_bias(records: dict, network: str) -> dict:
    """How the self-check's estimate ``w^`` stands to the weight the truth picks on the real
    damaged bins ``w*`` (:func:`truth_weights`), per bin class over every scored scan of
    ``network``'s self-check records: the mean and standard deviation of ``w^ - w*``, the
    mean ``se``, the correlation of ``w^`` and ``w*``, and of ``(w^ - w*) / se`` the
    mean and standard deviation (about 0 and 1 if the estimate's only error were its noise),
    and the same per family. Evaluation only: no choice reads it."""
    name = next((n for n, r in records.items() if n in VARIANTS and VARIANTS[n].self_check
                 and VARIANTS[n].network == network
                 and all("truth_weight" in e for ds in r["datasets"].values()
                         for c in ds["scores"].values() for e in c[n]["estimates"])), None)
    if name is None:
        return {}
    rec = records[name]
    rows = []  # (family, class, w^, w*, se)
    for ds in rec["datasets"].values():
        for cell in ds["scores"].values():
            es = cell[name]["estimates"]
            per = len(es) // len(SCORED_FAMILIES)
            for i, e in enumerate(es):
                for c in ("partial", "dead"):
                    rows.append((SCORED_FAMILIES[i // per], c, e["estimate"][c],
                                 e["truth_weight"][c], e["se"][c]))

    def stats(sel):
        diff = np.array([r[2] - r[3] for r in sel])
        z = np.array([(r[2] - r[3]) / r[4] for r in sel if r[4] > 0])
        est, truth = np.array([r[2] for r in sel]), np.array([r[3] for r in sel])
        return {"scans": len(sel), "mean_diff": round(float(diff.mean()), 4),
                "sd_diff": round(float(diff.std()), 4),
                "mean_se": round(float(np.mean([r[4] for r in sel])), 4),
                "corr": round(float(np.corrcoef(est, truth)[0, 1]), 3) if len(sel) > 1
                and est.std() > 0 and truth.std() > 0 else None,
                "mean_truth_weight": round(float(np.mean([r[3] for r in sel])), 4),
                "mean_estimate": round(float(np.mean([r[2] for r in sel])), 4),
                "z_mean": round(float(z.mean()), 3), "z_sd": round(float(z.std(ddof=1)), 3)
                if len(z) > 1 else None}

    return {c: {"all": stats([r for r in rows if r[1] == c]),
                **{f: stats([r for r in rows if r[1] == c and r[0] == f])
                   for f in SCORED_FAMILIES}} for c in ("partial", "dead")}


def _paired(rec: dict, base: dict, n: str, b: str, seed: int) -> tuple[float, list[float]]:
    """gmean over cells of (variant's mean NRMSE / baseline's) and its bootstrap 95 % interval
    (scans resampled within each data set)."""
    logs, draws = [], np.zeros(RESAMPLES)
    rng = np.random.default_rng(seed)
    cells = 0
    for d, ds in rec["datasets"].items():
        keys = list(ds["scores"])
        v = np.array([ds["scores"][k][n]["scans"] for k in keys])  # [cells, scans]
        w = np.array([base["datasets"][d]["scores"][k][b]["scans"] for k in keys])
        logs.append(np.log(v.mean(1) / w.mean(1)))
        pick = rng.integers(0, v.shape[1], size=(RESAMPLES, v.shape[1]))
        draws += np.log(v[:, pick].mean(2) / w[:, pick].mean(2)).sum(0)
        cells += len(keys)
    lo, hi = np.exp(np.percentile(draws / cells, [2.5, 97.5]))
    return float(np.exp(np.concatenate(logs).mean())), [float(lo), float(hi)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(VARIANTS), help="variants to run")
    ap.add_argument("--datasets", type=int, default=3, help="probe data sets")
    ap.add_argument("--seed", type=int, default=4040, help="root seed of the probe data sets "
                                                           "(not the suite's)")
    ap.add_argument("--work", help="work folder (default badblock-output/preset-probe; with "
                                   "--tiny a fresh temporary one)")
    ap.add_argument("--out", help="results folder (default bench/results/preset_probe)")
    ap.add_argument("--tiny", action="store_true", help="one small data set, a few steps")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the repairs")
    ap.add_argument("--train-threads", type=int, default=0,
                    help="run.threads of the trainings (0: the preset's)")
    ap.add_argument("--baseline", default="mixed96", choices=list(VARIANTS),
                    help="the variant the rule compares against (the preset as it is)")
    ap.add_argument("--summarise-only", action="store_true",
                    help="no runs: summarise the records already in --out again")
    args = ap.parse_args(argv)
    os.environ.setdefault("BADBLOCK_PROGRESS", "0")
    from benchtools import work_folder
    from quality_suite import load_suite

    from badblock.errors import BadInputError
    from badblock.utils.atomic import atomic_write_json
    from badblock.utils.hardware import cpu_description

    if args.tiny and not args.out:
        ap.error("--tiny needs --out (a tiny run never replaces the measured results)")
    suite = load_suite(smoke=args.tiny)
    if args.seed == suite.seed:
        ap.error(f"--seed {args.seed} is the suite's own: the probe may not see its data")
    suite = dataclasses.replace(suite, seed=args.seed,
                                datasets=1 if args.tiny else args.datasets)
    work = work_folder(args, "preset-probe")
    out = Path(args.out or ROOT / "bench" / "results" / "preset_probe")
    variants = args.only or list(VARIANTS)
    extra = list(suite.smoke.train) if args.tiny else []
    if args.train_threads:
        extra.append(f"run.threads={args.train_threads}")
    records = {n: {"what": VARIANTS[n].what, "sets": list(VARIANTS[n].sets),
                   "data": VARIANTS[n].data[1], "dead_weight": VARIANTS[n].dead_weight,
                   "network": VARIANTS[n].network or n, "seed": args.seed,
                   "self_check": VARIANTS[n].self_check, "z": VARIANTS[n].z,
                   "z_dead": _z_dead(VARIANTS[n]),
                   "machine": cpu_description(),
                   "scored_on": SCORED_ON,
                   "command": "python bench/preset_probe.py --only " + n
                   + (" --tiny" if args.tiny else "")
                   + (f" --datasets {args.datasets}" if args.datasets != 3 else "")
                   + (f" --seed {args.seed}" if args.seed != 4040 else "")
                   + (f" --train-threads {args.train_threads}" if args.train_threads else ""),
                   "datasets": {}}
               for n in variants}
    if not args.summarise_only:
        try:
            for d in range(suite.datasets):
                folders, validation, cfg = train_variants(suite, d, work, extra, variants)
                scores = score_variants(suite, d, folders, validation, cfg, work, args.threads)
                for n, f in folders.items():
                    records[n]["datasets"][str(d)] = {
                        "validation_scans": list(validation.ids), **_log_summary(f),
                        "scores": {k: {"model": v["model"], n: v[n]} for k, v in scores.items()}}
        except BadInputError as exc:
            print(f"preset_probe: error: {exc.message}", file=sys.stderr)
            return 2
        out.mkdir(parents=True, exist_ok=True)
        for n, rec in records.items():
            atomic_write_json(out / f"{n}.json", rec)
    # records of another seed or scored on other scans (older runs) do not compare
    every = {p.stem: r for p in sorted(out.glob("*.json")) if p.stem in VARIANTS
             for r in [json.loads(p.read_text())]
             if r.get("seed") == args.seed and r.get("scored_on") == SCORED_ON}
    summary = summarise(every, args.baseline, args.seed)
    for n, s in summary["variants"].items():
        print(f"[preset_probe] {n:10s} NRMSE / model fill: {s['ratio']:.3f} (per data set "
              + ", ".join(f"{v:.3f}" for v in s["per_dataset"].values()) + "; per level "
              + ", ".join(f"{k} {v:.3f}" for k, v in s["per_level"].items()) + "; partial "
              f"{s['per_class']['partial']:.3f}, dead {s['per_class']['dead']:.3f})"
              + (f"; / {args.baseline} {s['to_baseline']:.3f} [{s['to_baseline_95'][0]:.3f}, "
                 f"{s['to_baseline_95'][1]:.3f}]" if "to_baseline" in s else ""))
    print(f"[preset_probe] passing the rule: {summary['passing'] or 'none'}; the choice: "
          f"{summary['choice']}")
    for net, zs in summary["self_check_z"].items():
        for n, v in zs["variants"].items():
            print(f"[preset_probe] {n} (z {v['z']:g}, dead {v['z_dead']}): worse than the fill "
                  f"in {len(v['worse']['partial'])} of {v['cells']} cells on partly damaged, "
                  f"{len(v['worse']['dead'])} on fully dead bins")
        print(f"[preset_probe] the self-check's z for {net}'s network: "
              + (f"{zs['z']:g}, on fully dead bins {zs['z_dead']}" if zs.get("choice")
                 else zs.get("why")))
        for c, b in summary["self_check_bias"].get(net, {}).items():
            print(f"[preset_probe] {net} {c}: estimate - truth's weight "
                  f"{b['all']['mean_diff']:+.3f}"
                  f" (estimate {b['all']['mean_estimate']:.3f}, truth's "
                  f"{b['all']['mean_truth_weight']:.3f}), sd {b['all']['sd_diff']:.3f} against "
                  f"a mean standard error of {b['all']['mean_se']:.3f}, correlation "
                  f"{b['all']['corr']}; in standard errors mean "
                  f"{b['all']['z_mean']:+.2f}, sd {b['all']['z_sd']} over {b['all']['scans']} "
                  "scans; per family sd " + ", ".join(
                      f"{f} {b[f]['z_sd']}" for f in SCORED_FAMILIES))
    atomic_write_json(out / "summary.json", summary)
    print(f"preset_probe: {len(every)} variant record(s) in {out}")
    return 0


def _log_summary(folder: Path) -> dict:
    """The kept epoch (best validation estimate, no truth), the run's length and seconds, and
    the validation truth NRMSE per epoch (logged, never used for a choice)."""
    rows = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if not r.get("partial")]
    best = min(rows, key=lambda r: r["nrmse_net"])
    return {"kept_epoch": int(best["epoch"]), "epochs": len(rows),
            "val_truth_per_epoch": [r.get("nrmse_net_truth") for r in rows]}


if __name__ == "__main__":
    sys.exit(main())
