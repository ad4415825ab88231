"""Exponential moving average of the weights (``train.ema > 0``).

With noisy measured targets the last steps' weights scatter around the optimum; their average
sits closer to it. Validation, the best/final checkpoints and so repair use the averaged weights
(the checkpoint's ``model``; the raw ones are ``model_raw``, for resuming).
"""

from __future__ import annotations

import copy

import torch


def averaged_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``model`` in eval mode, to hold the average."""
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay_max: float,
               step: int) -> None:
    """``ema <- d * ema + (1 - d) * model`` for floating-point entries (others copied), with
    ``d = min(decay_max, (1 + step) / (10 + step))``: the usual warm-up, early on the average
    follows the weights closely."""
    decay = min(decay_max, (1.0 + step) / (10.0 + step))
    raw = model.state_dict()
    for key, value in ema.state_dict().items():
        if value.dtype.is_floating_point:
            value.mul_(decay).add_(raw[key].to(value.dtype), alpha=1.0 - decay)
        else:
            value.copy_(raw[key])


__all__ = ["averaged_copy", "update_ema"]
