"""Training losses: L1, MSE, Poisson deviance, SSIM, MS-SSIM and weighted sums of them.

Shapes: prediction and target ``[N, 1, V, B]`` (normalised counts), damage map broadcastable to
them (fraction of lines of response lost per bin, 0..1). With a noisy measured target, MSE and
the Poisson deviance learn the expected counts (noise2noise), L1 the median.

SSIM terms use pytorch-msssim's SSIM kernel (``pytorch_msssim.ssim`` and its ``_ssim`` per
scale). ``pytorch_msssim.ms_ssim`` itself asserts ``min side > (win - 1) * 16`` whatever the
number of scales and zeroes negative contrast terms with ``relu`` (whose gradient at 0 turns
``0 ** w`` into NaN), so MS-SSIM runs the same per-scale SSIM here with as many scales (at most
5, the standard weights renormalised) as fit the plane: the coarsest scale must still be at
least ``win`` wide. :meth:`Loss.describe` names the choice.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from badblock.errors import BadInputError

TERMS = ("l1", "mse", "poisson", "ssim", "msssim")
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, as pytorch-msssim
EPS = 1e-6


def poisson_deviance(mu: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-bin Poisson deviance ``2 (y log(y / mu) - (y - mu))``; 0 at ``mu == y``, finite at
    ``y == 0`` (``0 log 0 = 0``); ``mu`` is clamped to ``>= 1e-6``."""
    mu = mu.clamp(min=EPS)
    return 2.0 * (torch.xlogy(y, y) - torch.xlogy(y, mu) - (y - mu))


def msssim_levels(height: int, width: int, win: int, max_levels: int = 5) -> int:
    """How many MS-SSIM scales fit an ``height x width`` plane with a ``win`` window (>= 1)."""
    levels, h, w = 1, height, width
    while levels < max_levels:
        # avg_pool2d(kernel 2, padding side % 2), as pytorch-msssim downsamples
        h, w = (h + h % 2) // 2, (w + w % 2) // 2
        if min(h, w) < win:
            break
        levels += 1
    return levels


def msssim_weights(levels: int) -> list[float]:
    """The standard scale weights, truncated to ``levels`` and rescaled to the same total."""
    scale = sum(MSSSIM_WEIGHTS) / sum(MSSSIM_WEIGHTS[:levels])
    return [w * scale for w in MSSSIM_WEIGHTS[:levels]]


def _window(win: int, channels: int, device, dtype) -> torch.Tensor:
    from pytorch_msssim.ssim import _fspecial_gauss_1d

    return _fspecial_gauss_1d(win, 1.5).repeat(channels, 1, 1, 1).to(device, dtype)


def ssim_index(x: torch.Tensor, y: torch.Tensor, data_range, win: int) -> torch.Tensor:
    """Mean SSIM of ``[N, C, H, W]`` planes (pytorch-msssim, Gaussian window ``win``, sigma 1.5)."""
    from pytorch_msssim import ssim

    return ssim(x, y, data_range=data_range, win_size=win, size_average=True)


def msssim_index(x: torch.Tensor, y: torch.Tensor, data_range, win: int,
                 levels: int | None = None) -> torch.Tensor:
    """Mean MS-SSIM of ``[N, C, H, W]`` planes over ``levels`` scales (default: as many as fit)."""
    import torch.nn.functional as F
    from pytorch_msssim.ssim import _ssim

    if levels is None:
        levels = msssim_levels(x.shape[-2], x.shape[-1], win)
    weights = torch.tensor(msssim_weights(levels), device=x.device, dtype=x.dtype)
    window = _window(win, x.shape[1], x.device, x.dtype)
    values = []
    for level in range(levels):
        ssim_c, cs = _ssim(x, y, data_range=data_range, win=window, size_average=False)
        if level < levels - 1:
            values.append(cs.clamp(min=EPS))
            pad = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=pad)
            y = F.avg_pool2d(y, kernel_size=2, padding=pad)
    values.append(ssim_c.clamp(min=EPS))
    stacked = torch.stack(values, dim=0)  # [level, N, C]
    return torch.prod(stacked ** weights.view(-1, 1, 1), dim=0).mean()


class Loss(nn.Module):
    """Weighted sum of loss terms, e.g. ``Loss({"l1": 1, "msssim": 1})``.

    ``damaged_weight`` w: pixel-wise terms (l1, mse, poisson) weight each bin by
    ``1 + (w - 1) * damage`` (damage = lost fraction) and divide by the summed weights; SSIM terms
    are whole-plane measures and stay unweighted. ``damaged_only``: pixel-wise terms average over
    the bins with damage > 0 only -- exactly the bins repair takes from the network (data
    consistency copies the others), so no gradient is spent on copying undamaged bins. SSIM
    terms enter as ``1 - index`` with ``data_range`` = the target batch's range (inputs are
    normalised, not 0..255).
    """

    def __init__(self, terms: dict, damaged_weight: float = 1.0, ssim_win: int = 3,
                 damaged_only: bool = False):
        super().__init__()
        if not terms:
            raise BadInputError("loss.terms", "no loss terms given")
        for name, weight in terms.items():
            if name not in TERMS:
                raise BadInputError(f"loss.terms.{name}", f"unknown loss term (valid: "
                                    f"{', '.join(TERMS)})")
            if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
                raise BadInputError(f"loss.terms.{name}", f"weight must be a number >= 0, got "
                                    f"{weight!r}")
        if damaged_weight < 0:
            raise BadInputError("loss.damaged_weight", f"must be >= 0, got {damaged_weight}")
        if ssim_win < 1 or ssim_win % 2 == 0:
            raise BadInputError("loss.ssim_win", f"must be odd and >= 1, got {ssim_win}")
        self.terms = {k: float(v) for k, v in terms.items()}
        self.damaged_weight = float(damaged_weight)
        self.damaged_only = bool(damaged_only)
        self.ssim_win = ssim_win
        self.last_levels: int | None = None
        self.last_terms: dict[str, float] = {}

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                damage: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar loss of ``pred`` vs ``target`` (``[N, 1, V, B]``); ``damage`` optional."""
        if pred.shape != target.shape:
            raise BadInputError("loss", f"prediction {list(pred.shape)} and target "
                                f"{list(target.shape)} differ")
        # the SSIM statistics and the log in the deviance want fp32 even under bf16 autocast
        with torch.autocast(pred.device.type, enabled=False):
            return self._total(pred.float(), target.float(), damage)

    def _total(self, pred: torch.Tensor, target: torch.Tensor,
               damage: torch.Tensor | None) -> torch.Tensor:
        weight = None
        if damage is not None and damage.ndim == pred.ndim - 1:
            damage = damage.unsqueeze(1)
        if damage is not None and self.damaged_only:
            # a batch without damaged bins (denoise/paired data) falls back to every bin
            weight = (damage > 0).float().expand_as(pred) if bool((damage > 0).any()) else None
        elif damage is not None and self.damaged_weight != 1.0:
            weight = (1.0 + (self.damaged_weight - 1.0) * damage.float()).expand_as(pred)

        def mean(per_bin: torch.Tensor) -> torch.Tensor:
            if weight is None:
                return per_bin.mean()
            return (per_bin * weight).sum() / weight.sum().clamp(min=EPS)

        total = pred.new_zeros(())
        parts = {}
        data_range = None
        for name, w in self.terms.items():
            if name == "l1":
                value = mean((pred - target).abs())
            elif name == "mse":
                value = mean((pred - target) ** 2)
            elif name == "poisson":
                value = mean(poisson_deviance(pred, target))
            else:
                if data_range is None:
                    data_range = (target.amax() - target.amin()).detach().clamp(min=EPS)
                if name == "ssim":
                    value = 1.0 - ssim_index(pred, target, data_range, self._win(pred))
                else:
                    win = self._win(pred)
                    self.last_levels = msssim_levels(pred.shape[-2], pred.shape[-1], win)
                    value = 1.0 - msssim_index(pred, target, data_range, win, self.last_levels)
            parts[name] = value.detach()
            total = total + w * value
        self.last_terms = parts
        return total

    def _win(self, x: torch.Tensor) -> int:
        side = min(x.shape[-2:])
        if side < self.ssim_win:
            raise BadInputError("loss.ssim_win", f"window {self.ssim_win} exceeds the plane "
                                f"side {side}")
        return self.ssim_win

    def describe(self, plane: tuple[int, int] | None = None) -> str:
        """One line for logs; ``plane=(V, B)`` names the MS-SSIM scales used for that size."""
        sum_text = " + ".join(f"{w:g}*{k}" for k, w in self.terms.items())
        text = f"loss {sum_text}"
        if self.damaged_only:
            text += "; pixel-wise terms over damaged bins only"
        elif self.damaged_weight != 1.0:
            text += f"; damaged bins weighted x{self.damaged_weight:g} (pixel-wise terms)"
        if any(k in self.terms for k in ("ssim", "msssim")):
            text += f"; SSIM window {self.ssim_win} (Gaussian sigma 1.5), data range = target range"
        if "msssim" in self.terms:
            levels = (msssim_levels(plane[0], plane[1], self.ssim_win) if plane is not None
                      else self.last_levels)
            if levels is None:
                text += "; MS-SSIM scales: as many as fit the plane (<= 5)"
            else:
                where = f" for {plane[0]}x{plane[1]}" if plane is not None else ""
                text += f"; MS-SSIM {levels} scales{where}, weights " + ",".join(
                    f"{w:.3f}" for w in msssim_weights(levels))
        return text


def build_loss(cfg) -> Loss:
    """A :class:`Loss` from a ``LossConfig``."""
    return Loss(dict(cfg.terms), damaged_weight=cfg.damaged_weight, ssim_win=cfg.ssim_win,
                damaged_only=getattr(cfg, "damaged_only", False))
