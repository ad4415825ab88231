"""Optimiser and learning-rate schedules, resumable.

``Schedule`` owns the optimiser because the original training scripts' warm restarts replace it:
every ``warm_reset_length`` epochs (the period growing by ``warm_reset_increment`` after each
reset: periods L, L, L + i, L + 2i, ... as the original ``next_reset`` bookkeeping gives) a
fresh Adam at the initial learning rate with a fresh step decay. Other schedules: ``step``
(StepLR), ``cosine`` (SGDR, ``CosineAnnealingWarmRestarts``, stepped per epoch) and ``none``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from badblock.errors import BadInputError

SCHEDULES = ("none", "step", "warm_restart", "cosine")


def adam_factory(model: nn.Module, cfg) -> Callable[[], torch.optim.Optimizer]:
    """A callable making a fresh Adam over ``model``'s parameters with ``cfg``'s lr and betas
    (the original scripts': (0.5, 0.999))."""
    betas = tuple(float(b) for b in cfg.betas)
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise BadInputError("optim.betas", f"need two numbers in [0, 1), got {cfg.betas!r}")
    if cfg.lr <= 0:
        raise BadInputError("optim.lr", f"must be > 0, got {cfg.lr}")

    def make() -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=betas,
                                weight_decay=cfg.weight_decay)

    return make


class Schedule:
    """Optimiser + learning-rate schedule, advanced once per epoch with :meth:`end_epoch`.

    ``optimizer_factory``: a callable returning a fresh optimiser, or an ``nn.Module`` (then
    Adam per ``cfg``, see :func:`adam_factory`). ``cfg``: an ``OptimConfig``. After
    :meth:`end_epoch` returns True the optimiser was replaced: use :attr:`optimizer` anew.
    """

    def __init__(self, optimizer_factory, cfg):
        if isinstance(optimizer_factory, nn.Module):
            optimizer_factory = adam_factory(optimizer_factory, cfg)
        if cfg.schedule not in SCHEDULES:
            raise BadInputError("optim.schedule", f"must be one of {SCHEDULES}, got "
                                f"{cfg.schedule!r}")
        for key in ("step_size", "warm_reset_length", "cosine_t0", "cosine_mult"):
            if getattr(cfg, key) < 1:
                raise BadInputError(f"optim.{key}", f"must be >= 1, got {getattr(cfg, key)}")
        if cfg.warm_reset_increment < 0:
            raise BadInputError("optim.warm_reset_increment",
                                f"must be >= 0, got {cfg.warm_reset_increment}")
        self.factory = optimizer_factory
        self.cfg = cfg
        self.kind = cfg.schedule
        self.next_reset = cfg.warm_reset_length
        self.increment = 0
        self.resets = 0
        self.epochs_done = 0
        self._fresh()

    def _fresh(self) -> None:
        cfg = self.cfg
        self.optimizer = self.factory()
        sched = torch.optim.lr_scheduler
        if self.kind in ("step", "warm_restart"):
            self.scheduler = sched.StepLR(self.optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
        elif self.kind == "cosine":
            self.scheduler = sched.CosineAnnealingWarmRestarts(
                self.optimizer, T_0=cfg.cosine_t0, T_mult=cfg.cosine_mult, eta_min=cfg.lr_min)
        else:
            self.scheduler = None

    @property
    def lr(self) -> float:
        """The current learning rate (first parameter group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def end_epoch(self, epoch: int) -> bool:
        """Advance after epoch ``epoch`` (0-based) finished; True when the optimiser was reset."""
        self.epochs_done = epoch + 1
        if self.scheduler is not None:
            self.scheduler.step()
        if self.kind == "warm_restart" and self.epochs_done >= self.next_reset:
            # as the original: next_reset += length + increment; increment += warm_reset_increment
            self.next_reset += self.cfg.warm_reset_length + self.increment
            self.increment += self.cfg.warm_reset_increment
            self.resets += 1
            self._fresh()
            return True
        return False

    def state_dict(self) -> dict:
        """Everything needed to continue identically (plain types: loads with weights_only)."""
        return {"kind": self.kind, "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "next_reset": self.next_reset, "increment": self.increment,
                "resets": self.resets, "epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise BadInputError("optim.schedule", f"checkpoint was trained with schedule "
                                f"{state.get('kind')!r}, the config says {self.kind!r}")
        self._fresh()
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.next_reset = int(state["next_reset"])
        self.increment = int(state["increment"])
        self.resets = int(state["resets"])
        self.epochs_done = int(state["epochs_done"])

    def describe(self) -> str:
        c = self.cfg
        text = f"Adam lr {c.lr:g} betas {tuple(c.betas)} wd {c.weight_decay:g}; "
        if self.kind == "step":
            return text + f"StepLR every {c.step_size} epochs x{c.gamma:g}"
        if self.kind == "warm_restart":
            return text + (f"warm restarts: optimizer reset after {c.warm_reset_length} epochs, "
                           f"period growing by {c.warm_reset_increment}; StepLR every "
                           f"{c.step_size} x{c.gamma:g} within a period")
        if self.kind == "cosine":
            return text + (f"SGDR cosine restarts T0 {c.cosine_t0} x{c.cosine_mult}, "
                           f"lr min {c.lr_min:g}")
        return text + "constant learning rate"
