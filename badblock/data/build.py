"""Training and validation data from a config: the store, the datasets, the DataLoader.

The training set draws one dead block per sample from ``data.train_blocks`` (inpaint); the
validation set is a fixed number of samples (``train.val_batches`` batches, its own seed) of
the held-out scans damaged with the configured dead blocks (:func:`validation_mask`), with the
noiseless truth riding along for scoring when every scan has one.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import torch

from badblock.config import Config
from badblock.data.blockmasks import BlockSampler
from badblock.data.dataset import (
    PlaneDataset,
    SampleSpec,
    all_blocks,
    collate_samples,
    parse_block_list,
)
from badblock.data.store import Store
from badblock.errors import BadInputError
from badblock.physics.mask import real_lor_count, resolve_mask
from badblock.physics.normconv import view_margin
from badblock.physics.scanners import get_scanner
from badblock.physics.stack import padded_views


def open_store(value: str | os.PathLike, output_root: str | os.PathLike,
               data_root: str | os.PathLike):
    """The store ``value`` names: under ``output_root`` (``run.output``) if a store is there,
    else under ``data_root`` (``run.data``); absolute paths as they are. A missing one raises
    the store's own clear error."""
    candidates = [Path(output_root) / value, Path(data_root) / value]
    for path in candidates:
        if (path / "manifest.json").exists():
            return Store.open(path)
    return Store.open(candidates[0])  # raises the store's own clear error


def scanner_for(store, default: str):
    """The scanner preset of ``store`` (its own, else ``default``, the ``scanner.name``),
    checked against the store's planes x views x bins."""
    name = store.scanner or default
    try:
        scanner = get_scanner(name)
    except (KeyError, ValueError) as exc:
        raise BadInputError("scanner.name", f"unknown scanner {name!r} ({exc})") from None
    if tuple(scanner.shape[1:]) != tuple(store.shape[1:]):
        raise BadInputError(store.path, f"store planes x views x bins {list(store.shape[1:])} do "
                                        f"not match scanner {scanner.name} "
                                        f"{list(scanner.shape[1:])}")
    return scanner


def validation_mask(scanner_cfg, store, scanner, data_root: str | os.PathLike) -> np.ndarray:
    """The dead-block mask validation is scored with, float32 ``[plane, view, bin]``: the
    ``scanner_cfg.mask`` file (under ``data_root``), else the store's mask, else the section's
    dead blocks / crystals, on the store's ``scanner``."""
    resolved = resolve_mask(dataclasses.replace(scanner_cfg, name=scanner.name),
                            data_root=data_root, fallback=store.mask, check_shape=True)
    if (resolved.blocks or resolved.crystals) and not (resolved.mask > 0).any():
        raise BadInputError("scanner.dead_blocks", "the validation mask touches no bin")
    return resolved.mask


def build_data(cfg: Config, multiple: int):
    """(train dataset, validation dataset, info dict) for ``cfg`` and a UNet whose input
    sides must divide by ``multiple`` (``2**model.depth``).

    Checks the data section, opens the store (and the target store of the paired task),
    pads views to ``data.views_to`` or the next multiple, builds the per-sample block masks of
    ``data.train_blocks`` (inpaint) and the validation mask (:func:`validation_mask`).
    ``info``: store path, kind, views, views_to, bins, scanner name (or None), scan counts,
    ``reference`` (always 'measured': validation scores against the complete measured scans,
    what real data has) and ``truth`` (True when every validation scan also has a noiseless
    truth, which validation then logs next to it).
    """
    d = cfg.data
    if d.context < 0:
        raise BadInputError("data.context", f"must be >= 0, got {d.context}")
    if d.batch_size < 1:
        raise BadInputError("data.batch_size", f"must be >= 1, got {d.batch_size}")
    if d.epoch_size < d.batch_size:
        raise BadInputError("data.epoch_size", f"must be >= data.batch_size ({d.batch_size})")
    if not 0.0 < d.keep_rate <= 1.0:
        raise BadInputError("data.keep_rate", f"must be in (0, 1], got {d.keep_rate}")
    store = open_store(d.store, cfg.run.output, cfg.run.data)
    if store.kind == "image" and d.task == "inpaint":
        raise BadInputError("data.task", "an image store has no detector blocks: use denoise "
                                         "or paired")
    n_views = store.shape[2]
    views_to = d.views_to or padded_views(n_views, multiple)
    if store.kind == "image" and views_to != n_views:
        # The flipped wrap pads sinograms; an image's rows do not continue that way.
        raise BadInputError(store.path, f"image height {n_views} is not a multiple of "
                                        f"2**model.depth = {multiple}: crop or pad the volumes "
                                        "(or lower model.depth)")
    if views_to < n_views or views_to % multiple:
        raise BadInputError("data.views_to", f"{views_to} must be >= {n_views} views and a "
                                             f"multiple of 2**model.depth = {multiple}")
    if store.shape[3] % multiple:
        raise BadInputError("model.depth", f"{store.shape[3]} bins are not divisible by "
                                           f"2**depth = {multiple}: lower model.depth")
    targets_train = targets_val = None
    if d.task == "paired":
        if d.target_store:
            tstore = open_store(d.target_store, cfg.run.output, cfg.run.data)
            by_id = {s.id: s for s in tstore.scans}
            missing = [s.id for s in store.scans if s.id not in by_id]
            if missing:
                raise BadInputError(tstore.path, f"no target scans for {missing[:3]}")
            targets_train = [by_id[s.id] for s in store.split("train")]
            targets_val = [by_id[s.id] for s in store.split("val")]
        elif store.kind == "paired":
            targets_train = [TargetView(s) for s in store.split("train")]
            targets_val = [TargetView(s) for s in store.split("val")]
        else:
            raise BadInputError("data.target_store", "the paired task needs a target store "
                                                     "(or a store of kind 'paired')")
    scanner = None
    train_masks = val_mask = None
    if d.task == "inpaint":
        scanner = scanner_for(store, cfg.scanner.name)
        blocks = parse_block_list(d.train_blocks, "data.train_blocks") or all_blocks(scanner)
        if len(d.blocks_per_sample) != 2:
            raise BadInputError("data.blocks_per_sample", f"needs [min, max], got "
                                                          f"{d.blocks_per_sample}")
        train_masks = BlockSampler(scanner, blocks, d.blocks_per_sample, d.adjacent)
        # the factorised masks agree with physics.dead_block_mask
        train_masks.masks.check(train_masks.draw(np.random.default_rng(cfg.run.seed)))
        val_mask = validation_mask(cfg.scanner, store, scanner, cfg.run.data)
    sensitivity = None
    if cfg.model.per_lor:
        if scanner is None:
            raise BadInputError("model.per_lor", "needs the inpaint task on a scanner's "
                                                 "sinograms")
        sensitivity = real_lor_count(scanner)
    margin = view_margin(cfg.model.prior_widths) if cfg.model.prior_widths else 0
    spec = SampleSpec(task=d.task, context=d.context, views_to=views_to, margin=margin,
                      target=d.target, keep_rate=d.keep_rate, seed=cfg.run.seed,
                      thin_in_loader=d.thin_on == "loader")
    common = dict(segments=store.segments, tof_order=store.tof_order, sensitivity=sensitivity)
    train_scans = store.split("train")
    val_scans = store.split("val")
    train_fills = val_fills = None
    if d.fills:
        from badblock.data.fills import FillSet

        if d.task != "inpaint":
            raise BadInputError("data.fills", "damage draws need the inpaint task")
        fills = FillSet(_under(d.fills, cfg.run.output))
        if fills.record.get("scanner") != scanner.name:
            raise BadInputError(fills.folder, f"fills made for scanner "
                                f"{fills.record.get('scanner')}, the store's is {scanner.name}")
        # validation always scores the folder's draws: runs with and without the fill channel
        # are then compared on the very same damaged counts
        val_fills = [fills.draws(s, train_masks.masks) for s in val_scans]
        if cfg.model.fill_prior:
            train_fills = [fills.draws(s, train_masks.masks) for s in train_scans]
    if not val_scans:
        print("badblock train: warning: the store holds no validation scans; validating on the "
              "training scans (rebuild the store with preprocess.val_fraction > 0)",
              file=sys.stderr)
        val_scans, targets_val = train_scans, targets_train
    train_ds = PlaneDataset(train_scans, spec, masks=train_masks, targets=targets_train,
                            fills=train_fills, **common)
    val_spec = SampleSpec(**{**spec.__dict__, "seed": cfg.run.seed + 7919})
    n_val = max(1, cfg.train.val_batches) * d.batch_size
    val_ds = PlaneDataset(val_scans, val_spec, masks=val_mask, targets=targets_val,
                          length=n_val, with_truth=True, with_measured=True, fills=val_fills,
                          **common)
    info = {"store": os.fspath(store.path), "kind": store.kind, "views": n_views,
            "views_to": views_to, "margin": margin,
            "bins": store.shape[3], "scanner": None if scanner is None else scanner.name,
            "train_scans": len(train_scans), "val_scans": len(val_scans),
            "reference": "measured",
            "truth": all(s.truth is not None for s in val_scans) and d.task != "paired"}
    if train_fills is not None:
        info["fill"] = {**fills.settings, "attenuation": bool(fills.record.get("attenuation"))}
    return train_ds, val_ds, info


def _under(value: str, root: str | os.PathLike) -> Path:
    """``value`` as a path: absolute as it is, relative under ``root``."""
    path = Path(value)
    return path if path.is_absolute() else Path(root) / path


class TargetView:
    """A paired store's scan seen as a target scan (``.data`` = its target array)."""

    def __init__(self, scan):
        self.id = scan.id
        self.data = scan.target
        if self.data is None:
            raise BadInputError("store", f"paired store scan {scan.id} has no target")


def train_loader(ds, sampler, batch_size: int, workers: int,
                 device: torch.device) -> torch.utils.data.DataLoader:
    """The training DataLoader (also what ``bench/loader.py`` measures). Whole batches are
    fetched at once (``PlaneDataset.__getitems__``) and passed through as they are
    (``collate_samples``): no per-sample tensors to stack."""
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
        collate_fn=collate_samples, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
        drop_last=False)


__all__ = ["build_data", "train_loader", "open_store", "scanner_for", "validation_mask",
           "TargetView"]
