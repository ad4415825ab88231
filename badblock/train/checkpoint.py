"""What a training run keeps in its checkpoints, and how a run continues from one.

A run folder holds ``checkpoint_latest.pt`` (every epoch end and on preemption: what a resume
reads), ``checkpoint_best.pt`` (lowest validation NRMSE so far, estimated from the complete
measured validation scans: :mod:`badblock.train.validate`) and ``checkpoint_final.pt``. The
checkpoint dict (read and written by :mod:`badblock.utils.checkpoint`, ``weights_only=True``):

- ``format``: ``"badblock-checkpoint"``;
- ``model``: the state dict repair uses -- with ``train.ema > 0`` the averaged weights, and then
  ``model_raw`` the raw ones (training continues from those after a resume);
- ``model_config``: the UNet's keyword arguments: ``UNet(**model_config)`` + ``load_state_dict``
  rebuilds it, nothing else (``residual_channel`` when it corrects the prior channel);
- ``data``: what inference needs to build the same input: the input layout
  (:meth:`badblock.inference.ChannelLayout.to_dict`: ``context``, ``mask_channel``,
  ``mask_stack``, ``normalise``, ``per_lor``, ``prior_widths``, ``margin``), ``multiple``
  (2**depth), ``views_to``, ``views``, ``bins``, ``task``, ``target``, ``scanner``,
  ``dead_weight`` (``model.dead_weight``: the repair's output rule on fully dead bins) and, with
  ``model.fill_prior``, ``fill`` (the OSEM settings of the fills it was trained with, which
  repair must use: :func:`badblock.baselines.fill_settings`, plus ``attenuation``);
- ``optimizer``, ``schedule``: their state dicts;
- ``epoch``, ``epoch_step``, ``step``, ``done``: where the run stands (:class:`TrainState`);
- ``rng``: RNG states (:func:`badblock.train.rng.capture_rng`, the device generator included);
- ``metrics``: ``history`` (one record per epoch), ``best``, ``running`` (the current epoch's
  sums so far);
- ``config``: the whole resolved config; ``world_size``: processes that wrote it.

Resume is idempotent: samples are a pure function of the seed and their index and the device
generator's state is saved, so an interrupted and resumed run ends with the weights of an
uninterrupted one (bitwise on CPU).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from badblock.config.loader import to_dict
from badblock.train.rng import capture_rng, restore_rng
from badblock.utils.checkpoint import FORMAT, load_weights

LATEST = "checkpoint_latest.pt"
BEST = "checkpoint_best.pt"
FINAL = "checkpoint_final.pt"


def _fresh_running() -> dict:
    return {"loss_sum": 0.0, "batches": 0, "samples": 0, "seconds": 0.0}


@dataclass
class TrainState:
    """Where the run stands; everything here goes into the checkpoint."""

    epoch: int = 0  # current epoch (0-based)
    epoch_step: int = 0  # optimiser steps done in the current epoch
    step: int = 0  # optimiser steps done in total
    history: list = field(default_factory=list)  # one dict per finished epoch
    best: float = math.inf  # best validation NRMSE (from the measured scans) of the network
    running: dict = field(default_factory=_fresh_running)
    done: bool = False

    def next_epoch(self) -> None:
        """The current epoch is complete: on to the next, with fresh running sums."""
        self.epoch += 1
        self.epoch_step = 0
        self.running = _fresh_running()


def checkpoint_dict(cfg, info: dict, layout, model: torch.nn.Module,
                    ema_model: torch.nn.Module | None, schedule, state: TrainState,
                    gen: torch.Generator, world_size: int) -> dict:
    """The checkpoint dict of a run (see the module docstring). ``model``: the plain UNet (not
    wrapped); ``info``: the data info of :func:`badblock.data.build.build_data`; ``layout``:
    the run's :class:`~badblock.inference.ChannelLayout`."""
    s = state
    return {
        "format": FORMAT,
        "model": (ema_model or model).state_dict(),
        # with train.ema the raw weights go on training after a resume
        **({"model_raw": model.state_dict()} if ema_model else {}),
        "model_config": dict(model.config),
        "data": {**layout.to_dict(), "multiple": 2 ** cfg.model.depth,
                 "views_to": info["views_to"], "views": info["views"],
                 "bins": info["bins"], "task": cfg.data.task,
                 "target": cfg.data.target, "scanner": info["scanner"],
                 "dead_weight": float(cfg.model.dead_weight),
                 **({"fill": info["fill"]} if info.get("fill") else {})},
        "optimizer": schedule.optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "epoch": s.epoch, "epoch_step": s.epoch_step, "step": s.step, "done": s.done,
        "rng": capture_rng({"device": gen}),
        "metrics": {"history": s.history, "best": s.best, "running": s.running},
        "config": to_dict(cfg),
        "world_size": world_size,
    }


def restore(ck: dict, path: Path, model: torch.nn.Module, ema_model: torch.nn.Module | None,
            schedule, gen: torch.Generator, world_size: int) -> TrainState:
    """Load checkpoint ``ck`` (read from ``path``) into the run's parts and return its state.

    A checkpoint of another model is a :class:`BadInputError`; one written by another number
    of processes is resumed with a warning (the samples per rank change)."""
    if ck.get("world_size", 1) != world_size:
        print(f"badblock train: warning: {path} was written by {ck.get('world_size')} "
              f"processes, resuming with {world_size}: samples per rank change",
              file=sys.stderr)
    hint = "use another train.run folder for a different model"
    load_weights(model, ck.get("model_raw", ck["model"]), path, hint)
    if ema_model is not None:
        load_weights(ema_model, ck["model"], path, hint)
    schedule.load_state_dict(ck["schedule"])
    m = ck["metrics"]
    state = TrainState(epoch=int(ck["epoch"]), epoch_step=int(ck["epoch_step"]),
                       step=int(ck["step"]), history=list(m["history"]),
                       best=float(m["best"]), running=dict(m["running"]),
                       done=bool(ck.get("done", False)))
    restore_rng(ck["rng"], {"device": gen})
    return state


__all__ = ["LATEST", "BEST", "FINAL", "TrainState", "checkpoint_dict", "restore"]
