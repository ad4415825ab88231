"""The benchmark's data sets and its protocol: what may be chosen on what.

Per data set ``d`` (one call of :func:`prepare_dataset`), exactly as a user would:
``simulate`` (the preset's phantom families, ``train_scans`` scans, the ``train`` seed stream)
-> ``preprocess`` (the store holds out ``preprocess.val_fraction`` of the scans for
validation) -> ``train --config <preset>`` (the library functions the CLI calls; the trainer
picks ``checkpoint_best.pt`` on those validation scans). Then every other choice -- the
normalised-convolution widths per (dead-block pattern, count level), any other tuned baseline
-- is made by :func:`choose`, which accepts nothing but a :class:`ValidationScans`: the store's
validation split, built by :meth:`ValidationScans.from_store` and nothing else. The test scans
come into existence only after :func:`choose` has returned (the benchmark's order), from seeds
disjoint from the training stream (:func:`quality_suite.check_disjoint`), and they are a
different type (:class:`quality_cases.TestScan`), which :func:`choose` refuses.

Why tuned against the validation *truth*: it is the most favourable choice for a baseline, so
the classical reference is as strong as it can honestly be. The network's checkpoint is chosen
against the measured validation scans (what real data has).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from quality_suite import Suite, seeds_for

from badblock.errors import BadInputError


class ProtocolError(RuntimeError):
    """Something other than validation scans was about to be used for a choice."""


@dataclass(frozen=True)
class ValidationScans:
    """The validation split of one data set's store: the only scans choices are made on.

    ``ids``: the store's validation scan ids; ``folder``: the training simulation they were
    simulated in (complete measured scans and their truth sidecars).
    """

    dataset: int
    ids: tuple[str, ...]
    folder: Path
    train_ids: tuple[str, ...]

    @classmethod
    def from_store(cls, dataset: int, store_path: Path, folder: Path) -> ValidationScans:
        from badblock.data.store import Store

        store = Store.open(store_path, check_sources=False)
        val = tuple(s.id for s in store.split("val"))
        train = tuple(s.id for s in store.split("train"))
        if not val:
            raise BadInputError(store_path, "holds no validation scans: nothing to choose on")
        if set(val) & set(train):
            raise ProtocolError(f"{store_path}: scans in both splits")
        return cls(dataset, val, Path(folder), train)

    def paths(self, folder: Path | None = None) -> list[Path]:
        """The validation scans' headers in ``folder`` (default: the training simulation; a
        re-simulation of the same phantoms at another count level has the same names)."""
        from badblock.demo import scan_headers
        from badblock.io.naming import scan_id

        wanted = set(self.ids)
        found = [p for p in scan_headers(Path(folder or self.folder)) if scan_id(p) in wanted]
        if len(found) != len(wanted):
            raise ProtocolError(f"validation scans {sorted(wanted)} not all in {folder}")
        return found


@dataclass
class Choices:
    """What :func:`choose` fixed for one data set before any test scan exists."""

    dataset: int
    validation_ids: list[str]
    normconv_widths: dict = field(default_factory=dict)  # "pattern/level" -> [P, V, B]
    seconds: float = 0.0


@dataclass
class Dataset:
    """One data set, trained and ready: its config, checkpoint and choices."""

    index: int
    cfg: object
    folder: Path
    checkpoint: Path
    validation: ValidationScans
    train_seconds: float
    choices: Choices | None = None


def _config(suite: Suite, root: Path, seed: int, extra: Sequence[str] = ()):
    """The preset's config as ``badblock ... --config <preset>`` gives it, pointed at ``root``
    and the data set's seed (``extra``: the smoke run's few training steps)."""
    from badblock.config import load_config

    return load_config(suite.preset, [f"run.output={root}", f"run.seed={seed}",
                                      f"simulate.seed={seed}", f"scanner.name={suite.scanner}",
                                      *extra])


def simulation_config(cfg, *, scans: int, counts: float, seed: int, family: str | None = None,
                      params: dict | None = None, counts_range: Sequence[float] = ()):
    """``cfg`` with the simulate section a benchmark simulation uses: ``scans`` scans of
    ``counts`` expected prompts (each times a factor of ``counts_range`` when given: the
    preset's training doses; else exactly), ``seed``, and ``family``/``params`` an activity
    family of :mod:`badblock.physics.families` (None: the preset's own phantoms)."""
    c = copy.deepcopy(cfg)
    c.simulate.scans = scans
    c.simulate.counts = float(counts)
    c.simulate.counts_range = [float(v) for v in counts_range]
    c.simulate.seed = seed
    if family is not None:
        c.simulate.phantom = family
        c.simulate.phantom_params = dict(params or {})
    return c


def simulate_folder(cfg, out: Path, **settings) -> Path:
    """``badblock simulate`` with :func:`simulation_config` ``(cfg, **settings)`` into ``out``
    (kept when complete: a rerun of the benchmark reuses it)."""
    from badblock.physics.simulate import SIMULATION_JSON, simulate

    if (out / SIMULATION_JSON).exists():
        return out
    return simulate(simulation_config(cfg, **settings), out, force=True)


def prepare_store(suite: Suite, d: int, work: Path, overrides: Sequence[str] = (),
                  log: Callable[[str], None] = print, name: str = ""):
    """Simulate, preprocess and make the fills of data set ``d`` under ``work/d<d>`` (with
    ``name``: ``work/d<d>-<name>``, a store of other data settings), as a user would before
    ``badblock train``; returns ``(cfg, store, simulation folder)`` with ``cfg`` pointed at the
    store (a complete simulation or fill folder is reused)."""
    from badblock.data.fills import MANIFEST as FILLS_MANIFEST
    from badblock.data.fills import make_fills_for
    from badblock.data.preprocess import preprocess
    from badblock.demo import scan_headers

    root = work / (f"d{d}-{name}" if name else f"d{d}")
    seed = seeds_for(suite, "train", d)
    cfg = _config(suite, root, seed, overrides)
    sim = simulate_folder(cfg, root / "sim" / "train", scans=suite.train_scans,
                          counts=cfg.simulate.counts, seed=seed,
                          counts_range=cfg.simulate.counts_range)
    cfg.preprocess.inputs = [str(p) for p in scan_headers(sim)]
    cfg.preprocess.store = "store"
    store = preprocess(cfg, force=True)
    cfg.data.store = "store"
    if cfg.model.fill_prior and not (root / cfg.data.fills / FILLS_MANIFEST).exists():
        log(f"[data set {d}] model-based fills: {cfg.fills.draws} damage draws per training "
            "scan (badblock fills)")
        make_fills_for(cfg)
    log(f"[data set {d}] seed {seed}: {len(store.train)} training / {len(store.val)} "
        f"validation scans; --config {suite.preset}")
    return cfg, store, sim


def prepare_dataset(suite: Suite, d: int, work: Path, *, train_overrides: Sequence[str] = (),
                    log: Callable[[str], None] = print) -> Dataset:
    """Simulate, preprocess and train data set ``d`` under ``work/d<d>`` (see module doc);
    stages already complete there are reused (training resumes from its latest checkpoint)."""
    from badblock.train.loop import BEST, FINAL, train

    t0 = time.perf_counter()
    cfg, store, sim = prepare_store(suite, d, work, train_overrides, log)
    cfg.train.run = "train"
    folder = Path(train(cfg))
    best = folder / BEST
    checkpoint = best if best.exists() else folder / FINAL
    return Dataset(d, cfg, folder, checkpoint,
                   ValidationScans.from_store(d, store.store, sim),
                   round(time.perf_counter() - t0, 1))


def validation_pairs(validation: ValidationScans, suite: Suite, cfg, work: Path,
                     level: str) -> list[tuple[np.ndarray, np.ndarray, object]]:
    """(measured, truth, header) of each validation scan at count level ``level``: the same
    phantoms re-simulated (same seed, ``level`` x the counts) for levels other than 1."""
    from badblock.io import read_scan
    from badblock.io.naming import truth_sibling

    factor = float(suite.count_levels[level])
    folder = validation.folder
    # training scans span the preset's doses (simulate.counts_range): validation at a count
    # level is the same phantoms simulated again at exactly that level
    if factor != 1.0 or cfg.simulate.counts_range:
        folder = simulate_folder(cfg, work / f"d{validation.dataset}" / "sim" / f"train@{level}",
                                 scans=suite.train_scans, counts=factor * cfg.simulate.counts,
                                 seed=seeds_for(suite, "train", validation.dataset))
    out = []
    for path in validation.paths(folder):
        scan = read_scan(path)
        truth = np.asarray(read_scan(truth_sibling(path)).data, np.float32)
        out.append((np.asarray(scan.data), truth, scan.header))
    return out


def choose(validation: ValidationScans, suite: Suite, cfg, work: Path, masks: dict,
           log: Callable[[str], None] = print) -> Choices:
    """Every choice of one data set, on its validation scans only: normconv's widths for each
    (pattern, count level) of the suite, tuned against the validation truth on validation scans
    thinned by that pattern (``masks``: pattern -> mask)."""
    from badblock import baselines as bl
    from badblock.evaluate import thin_scan
    from badblock.physics import get_scanner, real_lor_count

    if not isinstance(validation, ValidationScans):
        raise ProtocolError(f"choices are made on validation scans only, not on "
                            f"{type(validation).__name__}")
    t0 = time.perf_counter()
    out = Choices(validation.dataset, list(validation.ids))
    sens = real_lor_count(get_scanner(suite.scanner)).astype(np.float32)
    levels = list(dict.fromkeys(suite.cases.counts))
    for level in levels:
        pairs = validation_pairs(validation, suite, cfg, work, level)
        header = pairs[0][2]
        for pattern in dict.fromkeys(suite.cases.patterns):
            mask = masks[pattern]
            damaged = [thin_scan(m, mask, np.random.default_rng(seeds_for(
                suite, "thin", validation.dataset, "validation", pattern, level, str(i))))
                for i, (m, _, _) in enumerate(pairs)]
            if "normconv" in suite.baselines:
                widths = bl.tune_normconv(damaged, [t for _, t, _ in pairs], mask,
                                          segments=header.segments, tof_order=header.tof_order,
                                          sensitivity=sens)
                out.normconv_widths[f"{pattern}/{level}"] = list(widths)
                log(f"[data set {validation.dataset}] normconv widths for {pattern} at "
                    f"{level} counts (tuned on {len(pairs)} validation scans): {widths}")
    out.seconds = round(time.perf_counter() - t0, 1)
    return out
