"""The training loop: ``train(cfg) -> run folder``.

One epoch = ``data.epoch_size`` samples (all ranks together) of clean context stacks from the
store; on the training device each batch is damaged by binomial thinning with its dead-block
mask, augmented, normalised from the damaged input only, and fed to the UNet. After each epoch
the network is validated on held-out scans (damaged with the configured dead blocks) and its
NRMSE on the damaged bins is reported next to the simple baseline "divide partly damaged bins by
1 - f", against the noiseless truth when the store has it, else against the measured scan.

Resume is idempotent: a run folder holding ``checkpoint_latest.pt`` continues from it, RNG
states included (samples are a pure function of the seed and their index; the device
generator's state is checkpointed), so an interrupted and resumed run ends with the weights of
an uninterrupted one (bitwise on CPU). SIGUSR2 / SIGTERM finish the step, save, requeue under
Slurm and return.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from badblock.config import Config, save_resolved
from badblock.config.loader import to_dict
from badblock.errors import BadInputError
from badblock.inference.layout import ChannelLayout, network_input, normalise_scale
from badblock.train import distributed as D
from badblock.train.rng import capture_rng, restore_rng
from badblock.utils.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from badblock.utils.memory import peak_rss_mb
from badblock.utils.progress import progress

LATEST = "checkpoint_latest.pt"
BEST = "checkpoint_best.pt"
FINAL = "checkpoint_final.pt"


class TrainingError(Exception):
    """Training cannot go on (NaN/inf loss); the message says why and what was kept."""


@dataclass
class TrainState:
    """Where the run stands; everything here goes into the checkpoint."""

    epoch: int = 0  # current epoch (0-based)
    epoch_step: int = 0  # optimiser steps done in the current epoch
    step: int = 0  # optimiser steps done in total
    history: list = field(default_factory=list)  # one dict per finished epoch
    best: float = math.inf  # best validation NRMSE of the network so far
    running: dict = field(default_factory=lambda: {"loss_sum": 0.0, "batches": 0,
                                                   "samples": 0, "seconds": 0.0})
    done: bool = False


# ----------------------------------------------------------------------------------------------
# Set-up


def _open_store(cfg: Config, key: str, value: str):
    from badblock.data.store import Store

    candidates = [cfg.output_path(value), cfg.data_path(value)]
    for path in candidates:
        if (path / "manifest.json").exists():
            return Store.open(path)
    return Store.open(candidates[0])  # raises the store's own clear error


def _scanner_for(cfg: Config, store):
    from badblock.physics.scanners import get_scanner

    name = store.scanner or cfg.scanner.name
    try:
        scanner = get_scanner(name)
    except (KeyError, ValueError) as exc:
        raise BadInputError("scanner.name", f"unknown scanner {name!r} ({exc})") from None
    if tuple(scanner.shape[1:]) != tuple(store.shape[1:]):
        raise BadInputError(store.path, f"store planes x views x bins {list(store.shape[1:])} do "
                                        f"not match scanner {scanner.name} "
                                        f"{list(scanner.shape[1:])}")
    return scanner


def _validation_mask(cfg: Config, store, scanner) -> np.ndarray:
    """The dead-block mask validation is scored with: scanner.mask file, the store's mask, or
    the configured dead blocks / crystals (on the store's scanner)."""
    import dataclasses

    from badblock.physics.mask import resolve_mask

    resolved = resolve_mask(dataclasses.replace(cfg.scanner, name=scanner.name),
                            data_root=cfg.run.data, fallback=store.mask, check_shape=True)
    if (resolved.blocks or resolved.crystals) and not (resolved.mask > 0).any():
        raise BadInputError("scanner.dead_blocks", "the validation mask touches no bin")
    return resolved.mask


def build_data(cfg: Config, multiple: int):
    """(train dataset, validation dataset, info dict) for ``cfg`` (see :mod:`badblock.data`)."""
    from badblock.data.dataset import (
        BlockMasks,
        PlaneDataset,
        SampleSpec,
        all_blocks,
        parse_block_list,
    )
    from badblock.physics.stack import padded_views

    d = cfg.data
    if d.context < 0:
        raise BadInputError("data.context", f"must be >= 0, got {d.context}")
    if d.batch_size < 1:
        raise BadInputError("data.batch_size", f"must be >= 1, got {d.batch_size}")
    if d.epoch_size < d.batch_size:
        raise BadInputError("data.epoch_size", f"must be >= data.batch_size ({d.batch_size})")
    if not 0.0 < d.keep_rate <= 1.0:
        raise BadInputError("data.keep_rate", f"must be in (0, 1], got {d.keep_rate}")
    store = _open_store(cfg, "data.store", d.store)
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
            tstore = _open_store(cfg, "data.target_store", d.target_store)
            by_id = {s.id: s for s in tstore.scans}
            missing = [s.id for s in store.scans if s.id not in by_id]
            if missing:
                raise BadInputError(tstore.path, f"no target scans for {missing[:3]}")
            targets_train = [by_id[s.id] for s in store.split("train")]
            targets_val = [by_id[s.id] for s in store.split("val")]
        elif store.kind == "paired":
            targets_train = [_TargetView(s) for s in store.split("train")]
            targets_val = [_TargetView(s) for s in store.split("val")]
        else:
            raise BadInputError("data.target_store", "the paired task needs a target store "
                                                     "(or a store of kind 'paired')")
    scanner = None
    train_masks = val_mask = None
    if d.task == "inpaint":
        scanner = _scanner_for(cfg, store)
        blocks = parse_block_list(d.train_blocks, "data.train_blocks") or all_blocks(scanner)
        train_masks = BlockMasks(scanner, blocks)
        train_masks.check(0)  # the factorised masks agree with physics.dead_block_mask
        val_mask = _validation_mask(cfg, store, scanner)
    spec = SampleSpec(task=d.task, context=d.context, views_to=views_to, target=d.target,
                      keep_rate=d.keep_rate, seed=cfg.run.seed,
                      thin_in_loader=d.thin_on == "loader")
    common = dict(segments=store.segments, tof_order=store.tof_order)
    train_scans = store.split("train")
    val_scans = store.split("val")
    if not val_scans:
        print("badblock train: warning: the store holds no validation scans; validating on the "
              "training scans (rebuild the store with preprocess.val_fraction > 0)",
              file=sys.stderr)
        val_scans, targets_val = train_scans, targets_train
    train_ds = PlaneDataset(train_scans, spec, masks=train_masks, targets=targets_train, **common)
    val_spec = SampleSpec(**{**spec.__dict__, "seed": cfg.run.seed + 7919})
    n_val = max(1, cfg.train.val_batches) * d.batch_size
    val_ds = PlaneDataset(val_scans, val_spec, masks=val_mask, targets=targets_val,
                          length=n_val, with_truth=True, **common)
    info = {"store": os.fspath(store.path), "kind": store.kind, "views": n_views,
            "views_to": views_to,
            "bins": store.shape[3], "scanner": None if scanner is None else scanner.name,
            "train_scans": len(train_scans), "val_scans": len(val_scans),
            "reference": "truth" if all(s.truth is not None for s in val_scans) and
            d.task != "paired" else "measured"}
    return train_ds, val_ds, info


class _TargetView:
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
    from badblock.data.dataset import collate_samples

    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
        collate_fn=collate_samples, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
        drop_last=False)


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed per (run seed, rank, step)."""
    return ((int(seed) * 1_000_003 + int(rank)) * 1_000_033 + int(step)) % (2**63 - 1)


def _device_generator(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


# ----------------------------------------------------------------------------------------------
# One batch on the device


@dataclass
class Batch:
    x: torch.Tensor  # network input [N, C(+1), Vp, B], normalised
    target: torch.Tensor  # [N, 1, V, B] normalised, cropped to the real views
    damage: torch.Tensor  # [N, 1, V, B] centre-plane lost fraction, cropped
    scale: torch.Tensor  # [N, 1, 1, 1]
    inp_centre: torch.Tensor  # [N, 1, V, B] damaged centre plane, counts, cropped
    truth: torch.Tensor | None = None  # [N, 1, V, B] counts, cropped (validation)


def _counts_to(counts: torch.Tensor, device: torch.device) -> torch.Tensor:
    """float32 counts on ``device``. uint16 has only basic support in torch off the CPU, so it
    becomes float32 on the host first (int16 travels as it is)."""
    if counts.dtype == torch.uint16 and device.type != "cpu":
        counts = counts.float()
    return counts.to(device, non_blocking=True).float()


def prepare_batch(raw: dict, cfg: Config, device: torch.device, gen: torch.Generator,
                  crop: tuple[int, int], augment: bool, image: bool = False) -> Batch:
    """Thin, augment, normalise a loader batch on ``device`` (all randomness from ``gen``).

    ``image``: image-domain data (a store of kind 'image'): Augmentor instead of the
    sinogram-aware augmentation, when ``augment.augmentor`` is on.
    """
    from badblock.data.augment import augment_batch, augment_images
    from badblock.data.corruption import thin

    d = cfg.data
    k = d.context
    target = raw["target"].to(device, non_blocking=True)
    mask = raw["mask"].to(device, non_blocking=True)
    if "damaged" in raw:  # thinned in the loader already
        inp = _counts_to(raw["damaged"], device)
    else:
        clean = _counts_to(raw["clean"], device)
        inp = clean if d.task == "paired" else thin(clean, 1.0 - mask, gen)
    if augment and cfg.augment.enabled and image:
        if cfg.augment.augmentor:
            inp, target, mask = augment_images(inp, target, mask, cfg.augment, gen)
    elif augment and cfg.augment.enabled:
        inp, target, mask = augment_batch(
            inp, target, mask, cfg.augment, gen, real_views=crop,
            target_mode="mean" if d.target == "truth" else "counts")
    scale = normalise_scale(inp, d.normalise)
    x = network_input(inp, mask, scale, k, d.mask_channel, d.mask_stack)
    a, b = crop
    truth = raw.get("truth")
    return Batch(x=x, target=(target / scale)[..., a:b, :], damage=mask[:, k:k + 1, a:b, :],
                 scale=scale, inp_centre=inp[:, k:k + 1, a:b, :],
                 truth=None if truth is None else truth.to(device)[..., a:b, :])


# ----------------------------------------------------------------------------------------------
# The loop


class Trainer:
    """Holds the model, optimiser, data and state of one run; :meth:`run` trains it."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.env = D.detect_env()
        self.device = D.select_device(cfg.run.device, self.env)
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        D.init_process_group(self.env, self.device)
        self.main = self.env.is_main
        self.folder = cfg.output_path(cfg.train.run)
        self._check_config()

    def _check_config(self) -> None:
        t = self.cfg.train
        if t.epochs < 1:
            raise BadInputError("train.epochs", f"must be >= 1, got {t.epochs}")
        if t.max_steps < 0:
            raise BadInputError("train.max_steps", f"must be >= 0, got {t.max_steps}")
        if not 0.0 <= t.ema < 1.0:
            raise BadInputError("train.ema", f"must be in [0, 1), got {t.ema}")
        if t.val_batches < 1:
            raise BadInputError("train.val_batches", f"must be >= 1, got {t.val_batches}")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BadInputError("run.device", "CUDA was asked for but is not available")

    # -- building ---------------------------------------------------------------------------

    def build(self) -> None:
        from badblock.data.dataset import EpochSampler
        from badblock.models import build_model
        from badblock.physics.stack import view_padding
        from badblock.train.losses import build_loss
        from badblock.train.schedules import Schedule

        cfg = self.cfg
        torch.manual_seed(cfg.run.seed)
        np.random.seed(cfg.run.seed & 0xFFFFFFFF)
        multiple = 2 ** cfg.model.depth
        self.train_ds, self.val_ds, self.info = build_data(cfg, multiple)
        self.crop = view_padding(self.info["views"], self.info["views_to"])
        self.crop = (self.crop[0], self.crop[0] + self.info["views"])
        layout = ChannelLayout.of(cfg.data.context, cfg.data.mask_channel, cfg.data.mask_stack)
        planes, mask_planes = layout.count_planes, layout.mask_planes
        in_channels = layout.in_channels
        sens = self._sensitivity_map() if cfg.model.sensitivity_channel else None
        if cfg.model.sensitivity_per_lor and sens is None:
            raise BadInputError("model.sensitivity_per_lor", "needs model.sensitivity_channel")
        per_lor = planes if cfg.model.sensitivity_per_lor else 0
        self.model = build_model(cfg.model, in_channels,
                                 None if sens is None else tuple(sens.shape), per_lor,
                                 mask_planes if per_lor and mask_planes > 1 else 1)
        if sens is not None:
            with torch.no_grad():
                self.model.sensitivity.copy_(torch.from_numpy(sens)[None, None])
        self.model = self.model.to(self.device)
        self.channels_last = cfg.train.channels_last and self.device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(cfg.loss)
        self.schedule = Schedule(self.model, cfg.optim)
        amp = cfg.train.amp
        self.amp = amp == "bf16" or (amp == "auto" and self.device.type == "cuda")
        self.sampler = EpochSampler(cfg.data.epoch_size, cfg.data.batch_size, self.env.rank,
                                    self.env.world_size)
        self.loader = self._loader(self.train_ds, self.sampler, cfg.data.workers)
        self.gen = _device_generator(self.device, cfg.run.seed * 1000 + self.env.rank)
        self.state = TrainState()
        self.net = self.model
        # Exponential moving average of the weights (train.ema > 0): with noisy measured targets
        # the last steps' weights scatter around the optimum; their average sits closer to it.
        # Validation, the best/final checkpoints and so repair use the averaged weights.
        self.ema_model = None
        if cfg.train.ema > 0:
            import copy

            self.ema_model = copy.deepcopy(_unwrap(self.model)).eval()
            for p in self.ema_model.parameters():
                p.requires_grad_(False)
        if self.env.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.train.compile:
            self.net = torch.compile(self.net)

    def _sensitivity_map(self) -> np.ndarray:
        """float32 ``[views_to, bin]``: the share of real LORs in each bin of the scanner's
        transaxial layout (0 in gap-crystal bins; every plane has this pattern, scaled by its
        ring-pair count), views padded with the flipped wrap like the data."""
        from badblock.physics.geometry import transaxial_pairs
        from badblock.physics.scanners import get_scanner
        from badblock.physics.stack import view_padding
        from badblock.physics.wrap import pad_views

        cfg = self.cfg
        if cfg.data.task != "inpaint" or not self.info.get("scanner"):
            raise BadInputError("model.sensitivity_channel", "needs the inpaint task on a "
                                                             "scanner's sinograms")
        a = cfg.augment
        if a.enabled and (a.view_roll > 0 or a.radial_flip > 0):
            raise BadInputError("model.sensitivity_channel", "the fixed sensitivity map needs "
                                "augment.view_roll = 0 and augment.radial_flip = 0 (they move "
                                "the data against the map)")
        scanner = get_scanner(self.info["scanner"])
        _, _, valid = transaxial_pairs(scanner)  # [view, mash, bin]
        share = valid.sum(axis=1).astype(np.float32) / float(valid.shape[1])
        before, after = view_padding(self.info["views"], self.info["views_to"])
        return np.ascontiguousarray(pad_views(share, None, before, after), dtype=np.float32)

    def _loader(self, ds, sampler, workers: int):
        return train_loader(ds, sampler, self.cfg.data.batch_size, workers, self.device)

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint_dict(self) -> dict:
        cfg = self.cfg
        s = self.state
        return {
            "format": FORMAT,
            "model": (self.ema_model or _unwrap(self.model)).state_dict(),
            # with train.ema the raw weights go on training after a resume
            **({"model_raw": _unwrap(self.model).state_dict()} if self.ema_model else {}),
            "model_config": dict(_unwrap(self.model).config),
            "data": {"context": cfg.data.context, "normalise": cfg.data.normalise,
                     "mask_channel": cfg.data.mask_channel, "mask_stack": cfg.data.mask_stack,
                     "multiple": 2 ** cfg.model.depth,
                     "views_to": self.info["views_to"], "views": self.info["views"],
                     "bins": self.info["bins"], "task": cfg.data.task,
                     "target": cfg.data.target, "scanner": self.info["scanner"]},
            "optimizer": self.schedule.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": s.epoch, "epoch_step": s.epoch_step, "step": s.step, "done": s.done,
            "rng": capture_rng({"device": self.gen}),
            "metrics": {"history": s.history, "best": s.best, "running": s.running},
            "config": to_dict(cfg),
            "world_size": self.env.world_size,
        }

    def save(self, *names: str) -> None:
        if not self.main:
            return
        state = self.checkpoint_dict()
        for name in names:
            save_checkpoint(self.folder / name, state)

    def resume(self) -> bool:
        """Continue from ``checkpoint_latest.pt`` when the run folder has one."""
        path = self.folder / LATEST
        if not path.exists():
            return False
        ck = load_checkpoint(path, map_location="cpu")
        if ck.get("world_size", 1) != self.env.world_size:
            print(f"badblock train: warning: {path} was written by {ck.get('world_size')} "
                  f"processes, resuming with {self.env.world_size}: samples per rank change",
                  file=sys.stderr)
        try:
            _unwrap(self.model).load_state_dict(ck.get("model_raw", ck["model"]))
            if self.ema_model is not None:
                self.ema_model.load_state_dict(ck["model"])
        except RuntimeError as exc:
            raise BadInputError(path, f"checkpoint does not fit the configured model "
                                      f"({str(exc).splitlines()[0]}); use another train.run "
                                      "folder for a different model") from None
        self.schedule.load_state_dict(ck["schedule"])
        m = ck["metrics"]
        self.state = TrainState(epoch=int(ck["epoch"]), epoch_step=int(ck["epoch_step"]),
                                step=int(ck["step"]), history=list(m["history"]),
                                best=float(m["best"]), running=dict(m["running"]),
                                done=bool(ck.get("done", False)))
        restore_rng(ck["rng"], {"device": self.gen})
        return True

    # -- training ---------------------------------------------------------------------------

    def run(self) -> Path:
        from badblock.train.signals import PreemptionHandler, requeue_slurm

        cfg = self.cfg
        self.build()
        resumed = self.resume()
        log = None
        if self.main:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_resolved(cfg, self.folder)
            from badblock.train.logs import RunLog

            log = RunLog(self.folder, tensorboard=cfg.train.tensorboard, visdom=cfg.train.visdom,
                         visdom_server=cfg.train.visdom_server, visdom_port=cfg.train.visdom_port)
            self._say(self._banner(resumed))
        s = self.state
        if resumed and self._finished() and (self.folder / FINAL).exists():
            self._say(f"already finished ({s.step} steps, {len(s.history)} epochs): "
                      f"{self.folder / FINAL}; raise train.epochs / train.max_steps or use "
                      "another train.run to train more")
            if log is not None:
                log.close()
            return self.folder
        try:
            with PreemptionHandler() as pre:
                while not self._finished():
                    stopped = self._epoch(pre)
                    if stopped == "preempted":
                        self.save(LATEST)
                        D.barrier()
                        if self.main:
                            self._say(f"{pre.signal_name or 'signal'} received: saved "
                                      f"{self.folder / LATEST} at step {s.step}")
                            if os.environ.get("SLURM_JOB_ID") and cfg.train.requeue:
                                ok = requeue_slurm()
                                self._say("requeued the Slurm job" if ok else
                                          "could not requeue the Slurm job")
                        return self.folder
                    self._end_epoch(log, partial=stopped == "max_steps")
                s.done = True
                self.save(LATEST, FINAL)
                if self.main:
                    self._say(f"finished: {s.step} steps, {s.epoch} full epochs; "
                              f"{self.folder / FINAL}")
        finally:
            if log is not None:
                log.close()
        return self.folder

    def _finished(self) -> bool:
        t = self.cfg.train
        return self.state.epoch >= t.epochs or bool(t.max_steps and self.state.step >= t.max_steps)

    def _banner(self, resumed: bool) -> str:
        i = self.info
        where = (f"resuming epoch {self.state.epoch + 1} step {self.state.step}" if resumed
                 else "starting")
        return (f"{where}: {_unwrap(self.model).describe()}\n  {self.loss_fn.describe()}; "
                f"{self.schedule.describe()}\n  store {i['store']}: {i['train_scans']} train / "
                f"{i['val_scans']} val scans, views {i['views']}->{i['views_to']}, task "
                f"{self.cfg.data.task}, device {self.device}"
                f"{' bf16' if self.amp else ''}, {self.env.world_size} process(es); "
                f"run folder {self.folder}")

    def _say(self, text: str) -> None:
        if self.main:
            print(f"badblock train: {text}", file=sys.stderr, flush=True)

    def _epoch(self, pre) -> str:
        """Train the rest of the current epoch; returns 'done', 'preempted' or 'max_steps'."""
        cfg = self.cfg
        s = self.state
        self.sampler.epoch = s.epoch
        self.sampler.start_step = s.epoch_step
        total = self.sampler.steps_per_epoch()
        self.model.train()
        bar = progress(total=total, desc=f"epoch {s.epoch + 1}/{cfg.train.epochs}", unit="step",
                       initial=s.epoch_step) if self.main else None
        t0 = time.perf_counter()
        outcome = "done"
        try:
            for raw in self.loader:
                loss = self._step(raw)
                s.step += 1
                s.epoch_step += 1
                s.running["loss_sum"] += loss
                s.running["batches"] += 1
                s.running["samples"] += raw["target"].shape[0] * self.env.world_size
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4g}")
                if cfg.train.max_steps and s.step >= cfg.train.max_steps and s.epoch_step < total:
                    outcome = "max_steps"  # mid-epoch; at an epoch's end it is a normal end
                    break
                if D.any_rank(pre.requested, self.device):
                    outcome = "preempted"
                    break
        finally:
            if bar is not None:
                bar.close()
            s.running["seconds"] += time.perf_counter() - t0
        return outcome

    def _step(self, raw: dict) -> float:
        cfg = self.cfg
        # Re-seeding per step makes every batch's damage a function of (seed, rank, step): a
        # resumed run, or any rank of a resumed DDP job, draws exactly what it would have drawn.
        self.gen.manual_seed(step_seed(cfg.run.seed, self.env.rank, self.state.step))
        b = prepare_batch(raw, cfg, self.device, self.gen, self.crop, augment=True,
                          image=self.info["kind"] == "image")
        x = b.x.contiguous(memory_format=torch.channels_last) if self.channels_last else b.x
        opt = self.schedule.optimizer
        opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            pred = self.net(x)
        a, c = self.crop
        loss = self.loss_fn(pred.float()[..., a:c, :], b.target, b.damage)
        value = float(loss.detach())
        # all ranks must agree before backward, or the healthy ones would wait in all-reduce
        if D.any_rank(not math.isfinite(value), self.device):
            kept = (f"the last good checkpoint is {self.folder / LATEST}"
                    if (self.folder / LATEST).exists() else "no checkpoint was written yet")
            raise TrainingError(
                f"loss became {value} at step {self.state.step + 1} (epoch "
                f"{self.state.epoch + 1}) on some rank; stopped, {kept}. Lower optim.lr, set "
                "train.grad_clip, or check the data for corrupt planes")
        loss.backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
        opt.step()
        if self.ema_model is not None:
            self._update_ema()
        return value

    @torch.no_grad()
    def _update_ema(self) -> None:
        # the usual warm-up: early on the average follows the weights closely
        step = self.state.step
        decay = min(self.cfg.train.ema, (1.0 + step) / (10.0 + step))
        raw = _unwrap(self.model).state_dict()
        for key, value in self.ema_model.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(decay).add_(raw[key].to(value.dtype), alpha=1.0 - decay)
            else:
                value.copy_(raw[key])

    @torch.no_grad()
    def validate(self) -> dict:
        """Validation loss and damaged-bin NRMSE of the network and of the baseline."""
        from torch.utils.data import DataLoader

        from badblock.data.dataset import collate_samples

        cfg = self.cfg
        self.model.eval()
        n = len(self.val_ds)
        idx = list(range(self.env.rank, n, self.env.world_size))
        loader = DataLoader(torch.utils.data.Subset(self.val_ds, idx),
                            batch_size=cfg.data.batch_size, num_workers=0,
                            collate_fn=collate_samples)
        gen = _device_generator(self.device, cfg.run.seed + 104729 + self.env.rank)
        sums = torch.zeros(5, dtype=torch.float64, device=self.device)
        for raw in loader:
            b = prepare_batch(raw, cfg, self.device, gen, self.crop, augment=False)
            x = b.x.contiguous(memory_format=torch.channels_last) if self.channels_last else b.x
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                pred = (self.ema_model or self.model)(x)
            a, c = self.crop
            pred = pred.float()[..., a:c, :]
            loss = self.loss_fn(pred, b.target, b.damage)
            ref = b.truth if (b.truth is not None and self.info["reference"] == "truth") \
                else b.target * b.scale
            net = pred * b.scale
            f = b.damage
            base = torch.where(f < 1.0, b.inp_centre / (1.0 - f).clamp(min=1e-6),
                               torch.zeros_like(f))
            region = (f > 0).to(torch.float64) if cfg.data.task != "paired" else \
                torch.ones_like(f, dtype=torch.float64)
            ref64 = ref.to(torch.float64)
            sums += torch.stack([
                (((net.to(torch.float64) - ref64) ** 2) * region).sum(),
                (((base.to(torch.float64) - ref64) ** 2) * region).sum(),
                ((ref64 ** 2) * region).sum(),
                loss.detach().to(torch.float64) * x.shape[0],
                torch.tensor(float(x.shape[0]), dtype=torch.float64, device=self.device)])
        D.all_reduce_sum(sums)
        err_net, err_base, ref2, loss_sum, count = sums.tolist()
        ref2 = max(ref2, 1e-30)
        return {"val_loss": loss_sum / max(count, 1.0),
                "nrmse_net": math.sqrt(err_net / ref2),
                "nrmse_baseline": math.sqrt(err_base / ref2),
                "reference": self.info["reference"]}

    def _end_epoch(self, log, partial: bool) -> None:
        cfg = self.cfg
        s = self.state
        D.broadcast_buffers(_unwrap(self.model))
        val = self.validate()
        r = s.running
        lr = self.schedule.lr
        rec = {"epoch": s.epoch + 1, "step": s.step, "partial": partial,
               "train_loss": r["loss_sum"] / max(r["batches"], 1), **val, "lr": lr,
               "samples_per_s": r["samples"] / max(r["seconds"], 1e-9),
               "epoch_time_s": r["seconds"], "peak_rss_mb": peak_rss_mb(),
               "peak_gpu_mb": (torch.cuda.max_memory_allocated(self.device) / 2**20
                               if self.device.type == "cuda" else 0.0)}
        rec["collapse"] = bool(s.epoch + 1 > cfg.train.collapse_warmup
                               and rec["nrmse_net"] > rec["nrmse_baseline"])
        if s.history and s.history[-1]["epoch"] == rec["epoch"] and s.history[-1]["partial"]:
            s.history.pop()  # an epoch cut short by max_steps, now complete: one line per epoch
        s.history.append(rec)
        improved = rec["nrmse_net"] < s.best
        if improved:
            s.best = rec["nrmse_net"]
        reset = False if partial else self.schedule.end_epoch(s.epoch)
        if not partial:
            s.epoch += 1
            s.epoch_step = 0
            s.running = {"loss_sum": 0.0, "batches": 0, "samples": 0, "seconds": 0.0}
        if self.main:
            self._say(f"epoch {rec['epoch']}: train {rec['train_loss']:.5g}  val "
                      f"{rec['val_loss']:.5g}  NRMSE damaged bins vs {rec['reference']}: network "
                      f"{rec['nrmse_net']:.4f}  baseline {rec['nrmse_baseline']:.4f}  lr "
                      f"{lr:.3g}  {rec['samples_per_s']:.1f} samples/s"
                      f"{'  (optimizer reset)' if reset else ''}")
            if rec["collapse"]:
                self._say("WARNING: the network is WORSE than the simple baseline (divide by "
                          f"1 - f) after {rec['epoch']} epochs: NRMSE {rec['nrmse_net']:.4f} > "
                          f"{rec['nrmse_baseline']:.4f}. Training may have collapsed: check the "
                          "learning rate, the loss and the normalisation")
            log.write_epoch(s.history)
        self.save(LATEST, *((BEST,) if improved else ()))


def train(cfg: Config) -> Path:
    """Train per ``cfg``; returns the run folder (``run.output / train.run``).

    Raises :class:`BadInputError` for bad configs/data and :class:`TrainingError` when the loss
    stops being finite.
    """
    trainer = Trainer(cfg)
    try:
        return trainer.run()
    finally:
        D.destroy_process_group()


__all__ = ["train", "Trainer", "TrainingError", "prepare_batch", "build_data", "load_checkpoint",
           "LATEST", "BEST", "FINAL"]
