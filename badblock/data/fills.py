"""Damage draws with their model-based fills, made before training (``model.fill_prior``).

A fill is :func:`badblock.baselines.model_fill` of one whole damaged scan: TOF OSEM with the
gaps modelled, forward-projected, ``y + f lam`` on partly damaged bins and ``lam`` on dead ones.
It needs the whole scan, and costs seconds per mini scan (one OSEM), so it cannot be made per
training sample the way thinning is. Instead every training scan gets ``draws`` damage draws
(a set of 1-3 dead blocks from the :class:`~badblock.data.blockmasks.BlockSampler`, binomial
thinning of the complete scan with its mask, seeded) and every validation scan one (the
validation mask), each stored with its fill; training samples pick a draw, and the network
sees exactly the damaged counts the fill was made from. A folder::

    fills.json                  settings (OSEM, projector, seed), the draws of every scan id
    validation_mask.npy         the validation draws' mask [plane, view, bin]
    <scan id>.<k>.damaged.npy   damaged counts [TOF, plane, view, bin], the scan's dtype
    <scan id>.<k>.fill.npy      its model-based fill, float32, same shape and TOF order

Repair makes the same fill of the scan it repairs, with the settings recorded here
(:func:`badblock.baselines.fill_settings`), so that training and repair see one estimate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from badblock.baselines import fill_settings, fill_settings_of, scan_fill
from badblock.data.blockmasks import BlockSampler
from badblock.data.corruption import thin
from badblock.errors import BadInputError
from badblock.utils.atomic import atomic_save_npy, atomic_write_json

MANIFEST = "fills.json"
VAL_MASK = "validation_mask.npy"
VERSION = 1


def make_fills(store, folder: str | os.PathLike, scanner, sampler: BlockSampler, *,
               draws: int, seed: int, val_mask: np.ndarray, settings: Mapping | None = None,
               mus: Mapping[str, np.ndarray] | None = None,
               progress: Callable[[str], None] | None = None,
               workers: int | None = None) -> Path:
    """Write the fill folder of ``store`` (module docstring) and return its path.

    ``sampler``: draws the dead blocks of the training scans' ``draws`` draws each;
    ``val_mask``: the mask of the validation scans' single draw; ``seed``: of the block draws
    and the thinning; ``settings``: :func:`fill_settings`; ``mus``: attenuation map
    (``[z, y, x]`` 1/mm on the scanner's grid) per scan id, as the scans were simulated (None:
    no attenuation modelled); ``workers``: processes (None: one per CPU core; every count
    writes the same files). Files are written under temporary names and renamed; the
    manifest last, so a folder with a manifest is complete.
    """
    if draws < 1:
        raise BadInputError("fills", f"needs at least one draw per training scan, got {draws}")
    settings = dict(settings or fill_settings())
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # the folder is incomplete until the end
    val_mask = np.asarray(val_mask, np.float32)
    atomic_save_npy(folder / VAL_MASK, val_mask)
    record: dict = {"version": VERSION, "scanner": scanner.name, "seed": int(seed),
                    "settings": settings, "store": os.fspath(store.path),
                    "attenuation": mus is not None, "scans": {}}
    jobs = [(s, "train") for s in store.split("train")] + [(s, "val") for s in store.split("val")]
    work = _FillWork(store.path, folder, scanner, sampler, draws, int(seed), val_mask, settings,
                     mus, store.tof_order)
    n = _workers(workers, len(jobs))
    if n > 1:
        import multiprocessing

        # forked workers of one torch thread each: the OSEM of one mini scan keeps about one
        # core busy, and libgomp's threads do not survive a fork
        with multiprocessing.get_context("fork").Pool(n, initializer=_one_thread) as pool:
            done = pool.imap(work, [(i, scan.id, split) for i, (scan, split) in enumerate(jobs)])
            for scan_id, split, entries in done:
                record["scans"][scan_id] = {"split": split, "draws": entries}
                if progress is not None:
                    progress(f"fills of {scan_id} ({split})")
    else:
        for i, (scan, split) in enumerate(jobs):
            scan_id, split, entries = work((i, scan.id, split))
            record["scans"][scan_id] = {"split": split, "draws": entries}
            if progress is not None:
                progress(f"fills of {scan_id} ({split})")
    atomic_write_json(folder / MANIFEST, record)
    return folder


def store_mus(store, scanner) -> dict[str, np.ndarray] | None:
    """Attenuation map per scan id of ``store``: ``<id>.mu.npy`` beside each scan's source file
    (:func:`badblock.io.naming.mu_sibling`); None when no scan has one. Some but not all is an
    error: the fills of one store are made one way."""
    from badblock.io.naming import mu_sibling
    from badblock.physics.phantom import load_mu_map

    found = {}
    for scan in store.scans:
        src = (scan.entry.get("data") or {}).get("source") or {}
        path = src.get("header") or src.get("path")
        sib = mu_sibling(Path(path)) if path else None
        if sib is not None:
            found[scan.id] = load_mu_map(sib, scanner)
    if not found:
        return None
    missing = [s.id for s in store.scans if s.id not in found]
    if missing:
        raise BadInputError(store.path, f"attenuation maps (<id>.mu.npy beside the sources) for "
                                        f"{len(found)} scans but not for {missing[:3]}")
    return found


def make_fills_for(cfg, force: bool = False, progress=None) -> Path:
    """``badblock fills``: the fill folder ``data.fills`` of the store ``data.store`` by the
    ``fills`` section (draws, OSEM settings), training's block draws (``data.train_blocks``,
    ``blocks_per_sample``, ``adjacent``), the validation mask (``scanner.dead_blocks``) and
    ``run.seed``. An existing complete folder is kept unless ``force``."""
    from badblock.data.build import _under, open_store, scanner_for, validation_mask
    from badblock.data.dataset import all_blocks, parse_block_list

    d, f = cfg.data, cfg.fills
    if not d.fills:
        raise BadInputError("data.fills", "no folder to write the fills to (set data.fills)")
    folder = _under(d.fills, cfg.run.output)
    if (folder / MANIFEST).exists() and not force:
        raise BadInputError(folder, "already holds fills (use --force to make them again)")
    store = open_store(d.store, cfg.run.output, cfg.run.data)
    if store.kind != "sinogram":
        raise BadInputError(store.path, f"fills need a sinogram store, not {store.kind!r}")
    scanner = scanner_for(store, cfg.scanner.name)
    blocks = parse_block_list(d.train_blocks, "data.train_blocks") or all_blocks(scanner)
    sampler = BlockSampler(scanner, blocks, d.blocks_per_sample, d.adjacent)
    settings = fill_settings_of(f)
    return make_fills(store, folder, scanner, sampler, draws=f.draws, seed=cfg.run.seed,
                      val_mask=validation_mask(cfg.scanner, store, scanner, cfg.run.data),
                      settings=settings, mus=store_mus(store, scanner), progress=progress)


def _workers(workers: int | None, jobs: int) -> int:
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    return max(1, min(int(workers), jobs))


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


class _FillWork:
    """The draws of one scan (job ``i``): thinned, filled, written; picklable by fork."""

    def __init__(self, store_path, folder, scanner, sampler, draws, seed, val_mask, settings,
                 mus, tof_order):
        self.store_path, self.folder, self.scanner = store_path, folder, scanner
        self.sampler, self.draws, self.seed, self.val_mask = sampler, draws, seed, val_mask
        self.settings, self.mus, self.tof_order = settings, mus, tof_order
        self._store = None

    def __call__(self, job):
        from badblock.data.store import Store

        i, scan_id, split = job
        if self._store is None:  # once per process
            self._store = Store.open(self.store_path, check_sources=False)
        complete = np.asarray(self._store.scan(scan_id).data)
        rng = np.random.default_rng([self.seed, i])  # a stream per scan: any worker, same draws
        mu = None if self.mus is None else self.mus[scan_id]
        entries = []
        for k in range(self.draws if split == "train" else 1):
            if split == "train":
                blocks = self.sampler.draw(rng)
                mask = self.sampler.masks.get(blocks)[np.arange(complete.shape[1])]
            else:
                blocks, mask = None, self.val_mask
            damaged = thin(complete, 1.0 - mask[None], rng).astype(complete.dtype)
            fill = scan_fill(damaged, mask, self.scanner, self.settings, mu=mu,
                             tof_order=self.tof_order)
            atomic_save_npy(self.folder / f"{scan_id}.{k}.damaged.npy", damaged)
            atomic_save_npy(self.folder / f"{scan_id}.{k}.fill.npy", fill.astype(np.float32))
            entries.append({"blocks": None if blocks is None else [list(b) for b in blocks]})
        return scan_id, split, entries


@dataclass
class FillDraw:
    """One damage draw of one scan: its mask (``mask[planes]``, ``.planes``), damaged counts and
    model-based fill (memory-mapped ``[TOF, plane, view, bin]``)."""

    mask: object
    damaged: np.ndarray
    fill: np.ndarray


class FillSet:
    """A fill folder opened for training: :meth:`draws` of each scan."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.exists():
            raise BadInputError(self.folder, f"no {MANIFEST}: not a complete fill folder "
                                             "(make one with `badblock fills`)")
        try:
            self.record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BadInputError(path, f"unreadable fill manifest ({exc})") from None
        if self.record.get("version") != VERSION:
            raise BadInputError(path, f"fill folder version {self.record.get('version')}, "
                                      f"this badblock reads {VERSION}")
        self.settings = self.record["settings"]

    def _load(self, name: str, shape) -> np.ndarray:
        path = self.folder / name
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BadInputError(path, f"unreadable fill array ({exc})") from None
        if arr.shape != tuple(shape):
            raise BadInputError(path, f"shape {list(arr.shape)}, the scan's is {list(shape)}")
        return arr

    def draws(self, scan, masks) -> list[FillDraw]:
        """The draws of ``scan`` (a store scan); ``masks``: the
        :class:`~badblock.data.blockmasks.BlockSetMasks` of the scanner."""
        from badblock.data.dataset import SparseMask

        entry = self.record["scans"].get(scan.id)
        if entry is None:
            raise BadInputError(self.folder, f"no fills for scan {scan.id} (made for store "
                                             f"{self.record.get('store')})")
        out = []
        for k, d in enumerate(entry["draws"]):
            if d["blocks"] is None:
                mask = SparseMask(self._load(VAL_MASK, scan.shape[1:]))
            else:
                mask = masks.get(tuple(tuple(b) for b in d["blocks"]))
            out.append(FillDraw(mask, self._load(f"{scan.id}.{k}.damaged.npy", scan.shape),
                                self._load(f"{scan.id}.{k}.fill.npy", scan.shape)))
        return out


__all__ = ["make_fills", "make_fills_for", "store_mus", "FillSet", "FillDraw", "MANIFEST"]
