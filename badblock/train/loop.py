"""The training loop: ``train(cfg) -> run folder``.

One epoch = ``data.epoch_size`` samples (all ranks together) of clean context stacks from the
store; on the training device each batch is damaged by binomial thinning with its dead-block
mask, augmented, normalised from the damaged input only, and fed to the UNet
(:mod:`badblock.train.batch`). After each epoch the network is validated on held-out scans
damaged with the configured dead blocks (:mod:`badblock.train.validate`), the history is
logged (:mod:`badblock.train.logs`) and checkpoints are written (:mod:`badblock.train.checkpoint`,
which also says what a checkpoint holds and how a resume continues bitwise). SIGUSR2 / SIGTERM
finish the step, save, requeue under Slurm and return. The parts are built by
:mod:`badblock.train.setup` and :func:`badblock.data.build.build_data`.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from badblock.config import RESOLVED_NAME, Config, save_resolved
from badblock.errors import BadInputError
from badblock.train import distributed as D
from badblock.train.batch import batch_loss, device_generator, prepare_batch, step_seed, unwrap
from badblock.train.checkpoint import BEST, FINAL, LATEST, TrainState, checkpoint_dict, restore
from badblock.utils.checkpoint import load_checkpoint, save_checkpoint
from badblock.utils.hardware import tune_allocator
from badblock.utils.progress import progress


class TrainingError(Exception):
    """Training cannot go on (NaN/inf loss); the message says why and what was kept."""


def train_one_epoch(model: torch.nn.Module, step: Callable[[dict], float], loader, sampler,
                    state: TrainState, *, epochs: int, max_steps: int, world_size: int,
                    stop: Callable[[], bool], show: bool) -> str:
    """Train the rest of the current epoch: ``step(batch) -> loss`` for each loader batch.

    Continues mid-epoch after a resume (``state.epoch_step``). Returns 'done', 'max_steps'
    (``max_steps`` reached before the epoch's end) or 'preempted' (``stop()`` became true on
    some rank).
    """
    s = state
    sampler.epoch = s.epoch
    sampler.start_step = s.epoch_step
    total = sampler.steps_per_epoch()
    model.train()
    bar = progress(total=total, desc=f"epoch {s.epoch + 1}/{epochs}", unit="step",
                   initial=s.epoch_step) if show else None
    t0 = time.perf_counter()
    outcome = "done"
    try:
        for raw in loader:
            loss = step(raw)
            s.step += 1
            s.epoch_step += 1
            s.running["loss_sum"] += loss
            s.running["batches"] += 1
            s.running["samples"] += raw["target"].shape[0] * world_size
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}")
            if max_steps and s.step >= max_steps and s.epoch_step < total:
                outcome = "max_steps"  # mid-epoch; at an epoch's end it is a normal end
                break
            if stop():
                outcome = "preempted"
                break
    finally:
        if bar is not None:
            bar.close()
        s.running["seconds"] += time.perf_counter() - t0
    return outcome


class Trainer:
    """Holds the model, optimiser, data and state of one run; :meth:`run` trains it."""

    def __init__(self, cfg: Config):
        from badblock.train.setup import check_train_config

        self.cfg = cfg
        self.env = D.detect_env()
        self.device = D.select_device(cfg.run.device, self.env)
        tune_allocator()
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        D.init_process_group(self.env, self.device)
        self.main = self.env.is_main
        self.folder = cfg.output_path(cfg.train.run)
        self._config_saved = False
        check_train_config(cfg.train, self.device)

    def build(self) -> None:
        """Data, network, loss, optimiser schedule, loader, generator, EMA copy, wrappers."""
        from badblock.data.build import build_data, train_loader
        from badblock.data.dataset import EpochSampler
        from badblock.train import setup
        from badblock.train.ema import averaged_copy
        from badblock.train.losses import build_loss
        from badblock.train.schedules import Schedule

        cfg, env = self.cfg, self.env
        torch.manual_seed(cfg.run.seed)
        np.random.seed(cfg.run.seed & 0xFFFFFFFF)
        self.train_ds, self.val_ds, self.info = build_data(cfg, 2 ** cfg.model.depth)
        self.crop = setup.real_views(self.info)
        self.layout = setup.layout_for(cfg)
        self.model = setup.build_network(cfg, self.layout, self.device)
        self.amp = setup.use_amp(cfg.train.amp, self.device)
        self.channels_last = setup.use_channels_last(cfg.train.channels_last, self.device)
        setup.to_memory_format(self.model, self.channels_last)
        self.loss_fn = build_loss(cfg.loss)
        self.schedule = Schedule(self.model, cfg.optim)
        self.sampler = EpochSampler(cfg.data.epoch_size, cfg.data.batch_size, env.rank,
                                    env.world_size)
        self.loader = train_loader(self.train_ds, self.sampler, cfg.data.batch_size,
                                   cfg.data.workers, self.device)
        self.gen = device_generator(self.device, cfg.run.seed * 1000 + env.rank)
        self.state = TrainState()
        self.ema_model = averaged_copy(self.model) if cfg.train.ema > 0 else None
        self.net = setup.wrap_for_training(self.model, env, self.device, cfg.train.compile)

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint_dict(self) -> dict:
        return checkpoint_dict(self.cfg, self.info, self.layout, unwrap(self.model),
                               self.ema_model,
                               self.schedule, self.state, self.gen, self.env.world_size)

    def save(self, *names: str) -> None:
        """Write the checkpoints ``names``; the first save of a run writes its resolved config
        too, so that config.resolved.yaml always describes the checkpoints beside it."""
        if not self.main:
            return
        if not self._config_saved:
            save_resolved(self.cfg, self.folder)
            self._config_saved = True
        state = self.checkpoint_dict()
        for name in names:
            save_checkpoint(self.folder / name, state)

    def resume(self) -> bool:
        """Continue from ``checkpoint_latest.pt`` when the run folder has one."""
        path = self.folder / LATEST
        if not path.exists():
            return False
        ck = load_checkpoint(path, map_location="cpu")
        self.state = restore(ck, path, unwrap(self.model), self.ema_model, self.schedule,
                             self.gen, self.env.world_size)
        return True

    # -- training ---------------------------------------------------------------------------

    def run(self) -> Path:
        """Train in the run folder, which this process locks for the run's length (a second
        ``badblock train`` there is refused; the lock dies with its process). Temporaries of
        killed runs there are removed first. A run that fails before its first checkpoint
        leaves nothing: the folder as it found it."""
        from badblock.train.logs import remove_logs
        from badblock.utils.atomic import clean_orphans
        from badblock.utils.runlock import run_lock

        # the folders this run creates (the run folder, and -o above it), deepest first
        created = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        lock = run_lock(self.folder, "badblock train") if self.main else contextlib.nullcontext()
        refused = None
        try:
            lock.__enter__()
        except BadInputError as exc:
            refused = exc
        if D.any_rank(refused is not None, self.device):  # every rank stops, not only rank 0
            raise refused or BadInputError(self.folder, "rank 0 could not lock the run folder")
        try:
            if self.main:
                clean_orphans(self.folder)
            try:
                return self._run()
            except BaseException:
                if self.main and not (self.folder / LATEST).exists():
                    (self.folder / RESOLVED_NAME).unlink(missing_ok=True)
                    remove_logs(self.folder)
                raise
        finally:
            lock.__exit__(None, None, None)
            if created and self.main and not (self.folder / LATEST).exists():
                for folder in created:
                    with contextlib.suppress(OSError):
                        folder.rmdir()

    def _run(self) -> Path:
        from badblock.train.logs import RunLog
        from badblock.train.signals import PreemptionHandler

        cfg = self.cfg
        self.build()
        resumed = self.resume()
        log = None
        if self.main:
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
                    stopped = train_one_epoch(
                        self.model, self._step, self.loader, self.sampler, s,
                        epochs=cfg.train.epochs, max_steps=cfg.train.max_steps,
                        world_size=self.env.world_size, show=self.main,
                        stop=lambda: D.any_rank(pre.requested, self.device))
                    if stopped == "preempted":
                        self._preempted(pre)
                        return self.folder
                    self._end_epoch(log, partial=stopped == "max_steps")
                s.done = True
                self.save(LATEST, FINAL)
                self._say(f"finished: {s.step} steps, {s.epoch} full epochs; "
                          f"{self.folder / FINAL}")
        finally:
            if log is not None:
                log.close()
        return self.folder

    def _preempted(self, pre) -> None:
        from badblock.train.signals import requeue_slurm

        self.save(LATEST)
        D.barrier()
        if self.main:
            self._say(f"{pre.signal_name or 'signal'} received: saved "
                      f"{self.folder / LATEST} at step {self.state.step}")
            if os.environ.get("SLURM_JOB_ID") and self.cfg.train.requeue:
                ok = requeue_slurm()
                self._say("requeued the Slurm job" if ok else "could not requeue the Slurm job")

    def _finished(self) -> bool:
        t = self.cfg.train
        return self.state.epoch >= t.epochs or bool(t.max_steps and self.state.step >= t.max_steps)

    def _banner(self, resumed: bool) -> str:
        i = self.info
        where = (f"resuming epoch {self.state.epoch + 1} step {self.state.step}" if resumed
                 else "starting")
        return (f"{where}: {unwrap(self.model).describe()}\n  {self.loss_fn.describe()}; "
                f"{self.schedule.describe()}\n  store {i['store']}: {i['train_scans']} train / "
                f"{i['val_scans']} val scans, views {i['views']}->{i['views_to']}, task "
                f"{self.cfg.data.task}, device {self.device}"
                f"{' bf16' if self.amp else ''}{' channels-last' if self.channels_last else ''}, "
                f"{self.env.world_size} process(es); "
                f"run folder {self.folder}")

    def _say(self, text: str) -> None:
        if self.main:
            print(f"badblock train: {text}", file=sys.stderr, flush=True)

    def _step(self, raw: dict) -> float:
        """One optimiser step on one loader batch; returns its loss."""
        from badblock.train.ema import update_ema

        cfg = self.cfg
        # Re-seeding per step makes every batch's damage a function of (seed, rank, step): a
        # resumed run, or any rank of a resumed DDP job, draws exactly what it would have drawn.
        self.gen.manual_seed(step_seed(cfg.run.seed, self.env.rank, self.state.step))
        b = prepare_batch(raw, self.layout, cfg.data.task, cfg.data.target, cfg.augment,
                          self.device, self.gen, self.crop,
                          augment=True, image=self.info["kind"] == "image")
        x = b.x.contiguous(memory_format=torch.channels_last) if self.channels_last else b.x
        opt = self.schedule.optimizer
        opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            pred = self.net(x)
        loss = batch_loss(self.loss_fn, b.counts(pred), b, cfg.loss.target,
                          cfg.loss.lost_power)
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
            update_ema(self.ema_model, unwrap(self.model), cfg.train.ema, self.state.step)
        return value

    def validate(self) -> dict:
        """Validation loss and damaged-bin NRMSE of the network and of the baseline."""
        from badblock.train.validate import validate

        cfg = self.cfg
        self.model.eval()
        gen = device_generator(self.device, cfg.run.seed + 104729 + self.env.rank)
        return validate(
            self.ema_model or self.model, self.val_ds,
            lambda raw: prepare_batch(raw, self.layout, cfg.data.task, cfg.data.target,
                                      cfg.augment, self.device, gen, self.crop, augment=False),
            lambda counts, b: batch_loss(self.loss_fn, counts, b, cfg.loss.target,
                                         cfg.loss.lost_power),
            batch_size=cfg.data.batch_size, device=self.device,
            env=self.env, amp=self.amp, channels_last=self.channels_last,
            paired=cfg.data.task == "paired", truth=self.info["truth"])

    def _end_epoch(self, log, partial: bool) -> None:
        """Validate, record the epoch, step the schedule, log and checkpoint."""
        from badblock.train.logs import collapse_warning, epoch_message, epoch_record

        s = self.state
        D.broadcast_buffers(unwrap(self.model))
        rec = epoch_record(s.epoch + 1, s.step, partial, s.running, self.validate(),
                           self.schedule.lr, self.cfg.train.collapse_warmup, self.device)
        if s.history and s.history[-1]["epoch"] == rec["epoch"] and s.history[-1]["partial"]:
            s.history.pop()  # an epoch cut short by max_steps, now complete: one line per epoch
        s.history.append(rec)
        # the choice real data allows: estimated from the measured validation scans only
        improved = rec["nrmse_net"] < s.best
        if improved:
            s.best = rec["nrmse_net"]
        reset = False if partial else self.schedule.end_epoch(s.epoch)
        if not partial:
            s.next_epoch()
        if self.main:
            self._say(epoch_message(rec, reset))
            if rec["collapse"]:
                self._say(collapse_warning(rec))
            log.write_epoch(s.history)
        self.save(LATEST, *((BEST,) if improved else ()))


def train(cfg: Config) -> Path:
    """Train per ``cfg``; returns the run folder (``run.output / train.run``).

    Raises :class:`BadInputError` for bad configs/data and :class:`TrainingError` when the loss
    stops being finite.
    """
    trainer = Trainer(cfg)
    try:
        folder = trainer.run()
        # every rank past its last collective before any tears its group down: a rank that
        # destroyed its gloo group while rank 0 still wrote the final checkpoint died in
        # CI with "terminate called without an active exception" (SIGABRT). Not on an error:
        # the other ranks may never come.
        D.barrier()
        return folder
    finally:
        D.destroy_process_group()


__all__ = ["train", "Trainer", "TrainingError", "train_one_epoch", "LATEST", "BEST", "FINAL"]
