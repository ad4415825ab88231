"""Synthetic datasets: phantom activity -> TOF sinograms with Poisson noise, per scanner preset.

For every scan the noiseless expectation (``scan_NNN.truth.*``, float32) is the forward
projection of the activity along the preset's own LORs, attenuated by a water body outline and
scaled so that its sum is the requested expected count; the prompts (``scan_NNN.*``) are a
Poisson draw from it. ``simulate.projector`` picks the projector: ``exact``
(:func:`badblock.physics.projector.project`, LOR by LOR; a damaged copy drops the LORs through
dead crystals) or ``fast`` (:class:`badblock.physics.fastproj.FastProjector`; a damaged copy's
expectation is the complete one times ``1 - f`` of the dead-block mask, i.e. the binomial-
thinning model of damage, exact in expectation when the LORs of a bin see the same activity);
``auto`` takes ``exact`` for scanners of at most ``EXACT_MAX_LORS`` LORs and ``fast`` above.
Truth and prompts are written plane-streamed through memory maps, so memory stays bounded for
any scanner. The whole folder is built under a temporary name and renamed into place at the end:
an interrupted run leaves nothing that looks complete.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from badblock import __version__
from badblock.config import Config, save_resolved
from badblock.errors import BadInputError
from badblock.io import ScanHeader, open_scan_writer, tof_offsets
from badblock.io.naming import MU_SUFFIX
from badblock.physics.families import build as build_phantom
from badblock.physics.families import check_family
from badblock.physics.geometry import EXACT_MAX_LORS, crystal_is_real, lor_total
from badblock.physics.mask import dead_block_mask, dead_set, parse_blocks, parse_crystals
from badblock.physics.phantom import VolumeGrid, body_mu_map, load_activity, place_volume
from badblock.physics.projector import (
    ProjectionGeometry,
    project,
    scanner_geometry,
    support_radius,
)
from badblock.physics.scanners import Scanner, get_scanner
from badblock.utils.atomic import atomic_dir, atomic_save_npy, atomic_write_json
from badblock.utils.progress import progress

log = logging.getLogger("badblock.simulate")

SUFFIX = {"interfile": ".hs", "e7": ".s.hdr", "flat": ".s"}
DTYPES = {"uint16": np.dtype("<u2"), "float32": np.dtype("<f4")}
SIMULATION_JSON = "simulation.json"
DAMAGED_DIR = "damaged"


@dataclass
class ScanSource:
    """What one scan images: activity and µ-map ``[z, y, x]`` and the parameters to record."""

    activity: np.ndarray
    mu: np.ndarray | None
    params: dict


def storage_tof_order(fmt: str, scanner: Scanner) -> str:
    """The TOF order a format stores: STIR time order, e7 centre-first, flat as the scanner."""
    if scanner.n_tof <= 1:
        return "none"
    return {"interfile": "linear", "e7": "siemens"}.get(fmt, scanner.tof_order)


def linear_index(n_tof: int, tof_order: str) -> np.ndarray:
    """For each stored TOF index, the projector's linear TOF index (offset + (n-1)/2)."""
    return tof_offsets(n_tof, tof_order) + (n_tof - 1) // 2


def scan_header(scanner: Scanner, fmt: str, path: Path, dtype: np.dtype) -> ScanHeader:
    """A fresh header for a simulated scan of ``scanner`` in format ``fmt``."""
    return ScanHeader(format=fmt, shape=scanner.shape, dtype=dtype, data_file=path,
                      segments=list(scanner.segments), tof_order=storage_tof_order(fmt, scanner),
                      scanner=scanner.name, header_path=None if fmt == "flat" else path)


def alive_crystals(scanner: Scanner, blocks=(), crystals=()) -> np.ndarray:
    """bool ``[n_rings, crystals_per_ring]``: False for dead crystals (and virtual gaps)."""
    alive = np.broadcast_to(crystal_is_real(scanner), (scanner.n_rings,
                                                       scanner.crystals_per_ring)).copy()
    for ring, dead in dead_set(scanner, blocks, crystals).items():
        alive[ring, sorted(dead)] = False
    return alive


def projector_kind(choice: str, scanner: Scanner) -> str:
    """``exact`` or ``fast`` for ``simulate.projector`` = auto | exact | fast."""
    if choice not in ("auto", "exact", "fast"):
        raise BadInputError("simulate.projector", f"must be auto, exact or fast, not {choice!r}")
    if choice != "auto":
        return choice
    return "exact" if lor_total(scanner) <= EXACT_MAX_LORS else "fast"


def make_sources(cfg: Config, geom: ProjectionGeometry, n_scans: int):
    """Yield a :class:`ScanSource` per scan: phantoms of the ``simulate.phantom`` family
    (:mod:`badblock.physics.families`) drawn from the seed, or the user's file."""
    sim = cfg.simulate
    grid: VolumeGrid = geom.grid
    families = scan_families(sim, n_scans)
    if families is None or sim.activity:
        if sim.phantom_params:
            raise BadInputError("simulate.phantom_params", "parameters are for a phantom "
                                                           "family, not an activity file")
        if not sim.activity:
            raise BadInputError("simulate.activity", "phantom 'file' needs an activity .npy")
        path = cfg.data_path(sim.activity)  # relative paths are taken from run.data
        raw = load_activity(path)
        activity = place_volume(raw, grid)
        if float(activity.sum()) < 0.999 * float(raw.sum(dtype=np.float64)):
            log.warning("%s: shape %s is larger than the %s grid %s; the activity outside it "
                        "was cropped", path, raw.shape, cfg.scanner.name, grid.shape)
        mu = body_mu_map(activity) if sim.attenuation else None
        params = {"file": str(path), "shape": list(raw.shape)}
        for _ in range(n_scans):
            yield ScanSource(activity, mu, params)
        return
    params = _family_params(sim)
    for i in range(n_scans):
        rng = np.random.default_rng(np.random.SeedSequence([sim.seed, i, 0]))
        activity, mu, record = build_phantom(families[i], grid, rng, geom.fov_radius_mm,
                                             **params[families[i]])
        yield ScanSource(activity, mu if sim.attenuation else None, record)


def scan_families(sim, n_scans: int) -> list[str] | None:
    """The activity family of each of ``n_scans`` scans (None: the user's activity file).

    One family: every scan. A list of ``k``: equal shares, scan ``index`` taking family
    ``stratum mod k`` of its dose stratum in :func:`scan_counts` (one seeded permutation for
    both), so that each family's scans spread evenly over the whole dose range.
    The phantom itself is still drawn from (seed, index) alone: the same index and family give
    the same volume in every run (a re-simulation at other counts has the same phantoms)."""
    names = [sim.phantom] if isinstance(sim.phantom, str) else list(sim.phantom)
    if names == ["file"]:
        return None
    if not names or "file" in names or len(set(names)) != len(names):
        raise BadInputError("simulate.phantom", "a list of activity families must name each "
                                                f"at most once and not 'file', got {names}")
    if len(names) == 1:
        return names * n_scans
    return [names[_stratum(sim, i)[0] % len(names)] for i in range(n_scans)]


def _stratum(sim, index: int) -> tuple[int, int]:
    """(stratum of scan ``index``, number of strata): a seeded permutation of the strata."""
    n = max(int(sim.scans), int(index) + 1)
    return int(np.random.default_rng([int(sim.seed), n, 11]).permutation(n)[int(index)]), n


def _family_params(sim) -> dict[str, dict]:
    """Family name -> its keyword parameters: ``phantom_params`` itself for one family, one
    entry per family of a list (absent: the family's defaults); unknown keys refused."""
    if isinstance(sim.phantom, str):
        check_family(sim.phantom, sim.phantom_params, "simulate.phantom_params")
        return {sim.phantom: dict(sim.phantom_params)}
    extra = set(sim.phantom_params) - set(sim.phantom)
    if extra:
        raise BadInputError("simulate.phantom_params", "with a list of families it maps a "
                            f"family of simulate.phantom to its parameters, not {sorted(extra)}")
    out = {}
    for name in sim.phantom:
        p = sim.phantom_params.get(name) or {}
        if not isinstance(p, dict):
            raise BadInputError("simulate.phantom_params", f"{name}: must be a mapping of "
                                                           "parameters")
        check_family(name, p, f"simulate.phantom_params.{name}")
        out[name] = dict(p)
    return out


def _view_chunk(scanner: Scanner, chunk_mb: float, kind: str = "exact") -> int:
    # exact: float64 complete + damaged; fast: float32 complete + damaged
    per_view = scanner.n_tof * scanner.n_planes * scanner.n_bins * (8 if kind == "exact" else 4) * 2
    return max(1, min(scanner.n_views, int(chunk_mb * 2**20 // per_view)))


def _plane_chunk(scanner: Scanner, chunk_mb: float) -> int:
    per_plane = scanner.n_tof * scanner.n_views * scanner.n_bins * 8 * 3
    return max(1, min(scanner.n_planes, int(chunk_mb * 2**20 // per_plane)))


def _poisson_into(out, truth, scale: float, seed: np.random.SeedSequence, scanner: Scanner,
                  dtype: np.dtype, chunk_mb: float, perm: np.ndarray, bar) -> dict:
    """Scale ``truth`` in place to the expected counts and write a Poisson draw to ``out``.

    Each chunk of planes draws from its own child of ``seed``, TOF bin by TOF bin in time order
    (``perm``: linear TOF index of each stored index), so a seed gives the same counts whatever
    the file format's TOF order and however many threads draw: up to 4 chunks at once (numpy
    releases the GIL while it draws; the draw is the slowest part of a Vision scan).
    """
    from concurrent.futures import ThreadPoolExecutor

    top = np.iinfo(dtype).max if dtype.kind in "iu" else None
    step = _plane_chunk(scanner, chunk_mb)
    starts = list(range(0, scanner.n_planes, step))
    seeds = seed.spawn(len(starts))
    time_order = np.argsort(perm)  # stored index of each TOF bin, earliest first

    def draw(c: int) -> tuple[int, int, int]:
        rng = np.random.default_rng(seeds[c])
        planes = slice(starts[c], starts[c] + step)
        block = np.asarray(truth[:, planes], np.float64) * scale
        truth[:, planes] = block.astype(np.float32)
        total, peak, clipped = 0, 0, 0
        for i in time_order:
            counts = rng.poisson(block[i])
            high = int(counts.max(initial=0))
            peak = max(peak, high)
            if top is not None and high > top:
                clipped += int((counts > top).sum())
                counts = np.minimum(counts, top)
            out[i, planes] = counts.astype(dtype)
            total += int(counts.sum())
        return total, peak, clipped

    total, clipped, peak = 0, 0, 0
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for t, p, c in pool.map(draw, range(len(starts))):
            total, peak, clipped = total + t, max(peak, p), clipped + c
            bar.update(1)
    return {"counts": total, "max_bin": peak, "clipped_bins": clipped}


def _projections(source: ScanSource, cfg: Config, scanner: Scanner, geom: ProjectionGeometry,
                 step_mm: float, alive: np.ndarray | None, keep: np.ndarray | None):
    """Yield ``(v0, v1, full, damaged)`` per chunk of views: the noiseless projection
    ``[n_tof (linear), plane, v1 - v0, bin]`` and its damaged copy (None without damage):
    LOR by LOR with ``alive`` (exact), or ``full x keep`` (fast; ``keep`` = 1 - f)."""
    sim = cfg.simulate
    kind = projector_kind(sim.projector, scanner)
    vstep = _view_chunk(scanner, sim.chunk_mb, kind)
    if kind == "exact":
        for v0 in range(0, scanner.n_views, vstep):
            v1 = min(v0 + vstep, scanner.n_views)
            full, damaged = project(geom, source.activity, source.mu, step_mm=step_mm,
                                    views=(v0, v1), alive=alive)
            yield v0, v1, full, damaged
        return
    import torch

    from badblock.physics.fastproj import FastProjector

    fast = FastProjector(scanner, source.mu, step_mm=step_mm, tof_fwhm_ps=sim.tof_fwhm_ps,
                         support_mm=support_radius(geom.grid, source.activity, source.mu),
                         device="cuda" if torch.cuda.is_available() else "cpu")
    table = fast.prepare(source.activity)  # once: each chunk of views reuses it
    for v0 in range(0, scanner.n_views, vstep):
        v1 = min(v0 + vstep, scanner.n_views)
        full = fast.forward(table, range(v0, v1)).cpu().numpy()
        yield v0, v1, full, None if keep is None else full * keep[:, v0:v1]


def simulate_scan(index: int, source: ScanSource, cfg: Config, scanner: Scanner,
                  geom: ProjectionGeometry, folder: Path, step_mm: float,
                  alive: np.ndarray | None, bar, keep: np.ndarray | None = None) -> dict:
    """Simulate scan ``index`` into ``folder`` (and ``folder/damaged`` with ``alive``; the fast
    projector's damaged copy keeps ``keep`` = 1 - f of each bin)."""
    sim = cfg.simulate
    fmt = sim.format
    dtype = DTYPES[sim.dtype]
    suffix = SUFFIX[fmt]
    names = {"scan": f"scan_{index:03d}{suffix}", "truth": f"scan_{index:03d}.truth{suffix}"}

    order = storage_tof_order(fmt, scanner)
    perm = linear_index(scanner.n_tof, order)
    targets = [folder] + ([folder / DAMAGED_DIR] if alive is not None else [])
    for t in targets[1:]:
        t.mkdir(exist_ok=True)
    if source.mu is not None:  # what the model-based fill of the scan needs (mu_sibling)
        names["mu"] = f"scan_{index:03d}{MU_SUFFIX}"
        for t in targets:
            atomic_save_npy(t / names["mu"], source.mu.astype(np.float32))
    record = {"index": index, **names, "phantom": source.params}
    with contextlib.ExitStack() as stack:
        # The truth files stay open (memory-mapped) until the prompts are drawn from them.
        truths = [stack.enter_context(open_scan_writer(t / names["truth"], scan_header(
            scanner, fmt, t / names["truth"], DTYPES["float32"]))) for t in targets]
        total = 0.0
        for v0, v1, full, damaged in _projections(source, cfg, scanner, geom, step_mm, alive,
                                                  keep):
            total += float(full.sum(dtype=np.float64))
            for i, j in enumerate(perm):  # stored TOF index i holds linear index j
                truths[0].data[i, :, v0:v1, :] = full[j]
                if damaged is not None:
                    truths[1].data[i, :, v0:v1, :] = damaged[j]
            bar.update(1)
        if not total > 0:
            raise BadInputError(sim.activity or "phantom",
                                "the activity projects to zero: nothing lies inside the "
                                f"{scanner.name}'s field of view")
        counts = scan_counts(sim, index)
        scale = counts / total
        seeds = np.random.SeedSequence([sim.seed, index, 1]).spawn(2)
        for k, (t, truth) in enumerate(zip(targets, truths)):
            with open_scan_writer(t / names["scan"], scan_header(
                    scanner, fmt, t / names["scan"], dtype)) as out:
                stats = _poisson_into(out.data, truth.data, scale, seeds[k], scanner, dtype,
                                      sim.chunk_mb, perm, bar)
            if stats["clipped_bins"]:
                log.warning("scan %d%s: %d bins exceed %s and were clipped (max %d); lower "
                            "simulate.counts or use simulate.dtype=float32", index,
                            " (damaged)" if k else "", stats["clipped_bins"], sim.dtype,
                            stats["max_bin"])
            record["damaged" if k else "noise"] = stats
        record["expected_counts"] = counts
        if alive is not None:
            record["expected_counts_damaged"] = sum(
                float(np.asarray(truths[1].data[:, p]).sum(dtype=np.float64))
                for p in range(scanner.n_planes))
    return record


def scan_counts(sim, index: int) -> float:
    """Expected prompts of scan ``index`` of ``simulate.scans``: ``simulate.counts``, times a
    factor in ``simulate.counts_range`` when that is set, log-uniform and stratified.

    Stratified: the log range is cut into ``scans`` equal strata, a seeded permutation gives
    scan ``index`` its stratum and a draw from (seed, index) its place within it. Each scan is
    still log-uniform, but a run's scans cover the whole range: 12 independent draws can miss
    the low doses altogether (a benchmark data set drew none below 0.89x of [0.25, 10]), and a
    network never shown them cannot learn how much to smooth there."""
    if not sim.counts_range:
        return float(sim.counts)
    lo, hi = (math.log(float(v)) for v in sim.counts_range)
    stratum, n = _stratum(sim, index)
    u = np.random.default_rng([int(sim.seed), int(index), 7]).uniform()
    return float(sim.counts) * math.exp(lo + (hi - lo) * (stratum + u) / n)


def simulate(cfg: Config, out_dir: str | Path | None = None, *, force: bool = False,
             scanner: Scanner | None = None) -> Path:
    """Simulate ``cfg.simulate.scans`` scans of ``cfg.scanner.name`` into ``out_dir``.

    Writes ``scan_NNN`` (prompts, ``simulate.dtype``), ``scan_NNN.truth`` (float32 noiseless
    expectation), ``simulation.json`` and the resolved config; with ``simulate.dead_blocks`` or
    ``simulate.dead_crystals`` also ``damaged/`` with the same scans projected without the LORs
    through dead crystals. Refuses a non-empty existing folder unless ``force`` (then replaces
    it once the new one is complete). ``scanner`` replaces the preset named by
    ``cfg.scanner.name`` (e.g. a preset with fields changed by ``get_scanner(name, **fields)``).
    Returns the folder.
    """
    sim = cfg.simulate
    out = Path(out_dir if out_dir is not None else cfg.output_path("simulate"))
    if sim.scans < 1:
        raise BadInputError("simulate.scans", f"must be at least 1, not {sim.scans}")
    if not sim.counts > 0 or not math.isfinite(sim.counts):
        raise BadInputError("simulate.counts", f"must be a positive number, not {sim.counts}")
    if sim.counts_range and (len(sim.counts_range) != 2 or not
                             0 < sim.counts_range[0] <= sim.counts_range[1] < math.inf):
        raise BadInputError("simulate.counts_range", f"needs [lo, hi] with 0 < lo <= hi, not "
                                                     f"{sim.counts_range}")
    if sim.step_mm < 0 or sim.chunk_mb <= 0:
        raise BadInputError("simulate", "step_mm must be >= 0 and chunk_mb > 0")
    if sim.format not in SUFFIX:
        raise BadInputError("simulate.format", f"unknown format {sim.format!r}")
    scanner = scanner if scanner is not None else get_scanner(cfg.scanner.name)
    blocks = parse_blocks(sim.dead_blocks, "simulate.dead_blocks")
    crystals = parse_crystals(sim.dead_crystals, "simulate.dead_crystals")
    alive = alive_crystals(scanner, blocks, crystals) if (blocks or crystals) else None
    geom = scanner_geometry(scanner, tof_fwhm_ps=sim.tof_fwhm_ps)
    step_mm = sim.step_mm or min(geom.grid.voxel_mm[1], geom.grid.voxel_mm[2])
    sources = make_sources(cfg, geom, sim.scans)  # validates --activity before any output
    first = next(sources)
    replace = force or (out.is_dir() and not any(out.iterdir()))
    kind = projector_kind(sim.projector, scanner)
    keep = None
    if alive is not None and kind == "fast":
        keep = 1.0 - dead_block_mask(scanner, blocks, crystals)
    n_views = math.ceil(scanner.n_views / _view_chunk(scanner, sim.chunk_mb, kind))
    n_planes = math.ceil(scanner.n_planes / _plane_chunk(scanner, sim.chunk_mb))
    steps = sim.scans * (n_views + n_planes * (2 if alive is not None else 1))
    records = []
    with atomic_dir(out, replace=replace, last=[SIMULATION_JSON]) as tmp:
        bar = progress(total=steps, desc=f"simulate {scanner.name}", unit="chunk")
        try:
            source = first
            for i in range(sim.scans):
                if i:
                    source = next(sources)
                records.append(simulate_scan(i, source, cfg, scanner, geom, tmp, step_mm,
                                             alive, bar, keep))
        finally:
            bar.close()
        grid = geom.grid
        atomic_write_json(tmp / SIMULATION_JSON, {
            "version": __version__, "scanner": scanner.name, "seed": sim.seed,
            "counts": sim.counts, "counts_range": list(sim.counts_range) or None,
            "format": sim.format, "dtype": sim.dtype,
            "shape": list(scanner.shape), "tof_order": storage_tof_order(sim.format, scanner),
            "tof_fwhm_ps": (sim.tof_fwhm_ps or scanner.tof_fwhm_ps) if geom.tof else None,
            "tof_sign": "time-order TOF index rises as the annihilation moves from det1 toward "
                        "det2 (t_det1 - t_det2 grows); offset 0 = LOR midpoint",
            "attenuation": sim.attenuation, "mu_water_per_mm": 0.0096,
            "grid": {"shape": list(grid.shape), "voxel_mm": list(grid.voxel_mm)},
            "step_mm": step_mm,
            "projector": kind,
            "damage_model": None if alive is None else
            ("LOR level: the LORs through dead crystals are left out" if kind == "exact" else
             "binomial thinning: damaged expectation = complete expectation x (1 - f)"),
            "dead_blocks": [f"{t}:{a}" for t, a in blocks],
            "dead_crystals": [f"{c}:{r}" for c, r in crystals],
            "scans": records})
        save_resolved(cfg, tmp)
    return out
