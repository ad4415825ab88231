"""The normalised-convolution prior the UNet can take as one more input channel.

The classical gap-filling estimate (the normalised convolution of the ``normconv`` baseline),
computed per real LOR inside the network so that the division a ReLU network would otherwise
have to approximate is done exactly. Inputs: ``x`` ``[N, C, H, W]`` whose first ``n`` channels
are count planes already divided by the sensitivity map (per LOR) and whose next channels are
the lost fractions f (the centre plane's only, or all ``n`` planes'), and ``sens`` ``[1, 1, H,
W]`` the sensitivity map (real-LOR share per bin). With a Gaussian ``G`` of sigmas ``sv``
views and ``sb`` bins (zero padding):

- two sigmas ``(sv, sb)``: the centre plane's ``G * counts / G * ((1 - f) sens)``;
- three sigmas ``(sp, sv, sb)`` (all ``n`` mask planes given): every plane's counts and its own
  ``(1 - f) sens`` are summed over the planes with Gaussian weights of sigma ``sp`` planes
  around the centre, then smoothed in-plane and divided. Neighbouring planes of a compressed
  sinogram hold different numbers of ring pairs (and a slightly different object), so each
  plane's counts are first brought to the centre plane's level: scaled by the ratio of the
  centre plane's counts to its own, summed over the bins that neither plane lost.

Where the smoothed denominator is below 1e-3 (nothing measured nearby) the estimate is 0. The
kernels are non-persistent buffers: rebuilt from the sigmas, never in a state dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NormConvPrior(nn.Module):
    """``prior(x, sens) -> [N, 1, H, W]`` counts per LOR; see the module docstring.

    ``sigma``: 2 values (views, bins) or 3 (planes, views, bins); ``per_lor``: the number ``n``
    of count planes at the start of ``x``; ``mask_planes``: 1 (the centre plane's f) or ``n``.
    """

    def __init__(self, sigma, per_lor: int, mask_planes: int = 1):
        super().__init__()
        self.sigma = [float(s) for s in sigma]
        self.per_lor = int(per_lor)
        self.mask_planes = int(mask_planes)
        # in-plane kernels g0 (views), g1 (bins); 3-D: plane weights gp too
        for i, s in enumerate(self.sigma[-2:]):
            r = max(1, int(round(3 * s)))
            g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / s) ** 2)
            self.register_buffer(f"g{i}", g / g.sum(), persistent=False)
        if len(self.sigma) == 3:
            off = torch.arange(self.per_lor, dtype=torch.float32) - self.per_lor // 2
            w = torch.exp(-0.5 * (off / self.sigma[0]) ** 2)
            self.register_buffer("gp", w.view(1, -1, 1, 1), persistent=False)

    def smooth(self, x: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian over views and bins of ``[N, 1, H, W]`` (zero padding)."""
        g0, g1 = self.g0.to(x.dtype), self.g1.to(x.dtype)
        x = F.conv2d(x, g0.view(1, 1, -1, 1), padding=(g0.numel() // 2, 0))
        return F.conv2d(x, g1.view(1, 1, 1, -1), padding=(0, g1.numel() // 2))

    def forward(self, x: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
        n, c = self.per_lor, self.per_lor // 2
        if len(self.sigma) == 2:
            counts = x[:, c:c + 1] * sens  # counts again (per-LOR times the map)
            keep = (1.0 - x[:, n + self.mask_planes // 2:][:, :1]).clamp(0.0, 1.0) * sens
            num, den = self.smooth(counts), self.smooth(keep)
        else:
            counts = x[:, :n] * sens  # [N, n, H, W]
            kept = (1.0 - x[:, n:2 * n]).clamp(0.0, 1.0)
            # each plane's level against the centre plane's, over bins neither plane lost
            both = (kept >= 1.0) & (kept[:, c:c + 1] >= 1.0)
            own = (counts * both).sum(dim=(2, 3), keepdim=True)
            ref = (counts[:, c:c + 1] * both).sum(dim=(2, 3), keepdim=True)
            gain = torch.where(own > 0, ref / own.clamp(min=1e-6), torch.ones_like(own))
            gain = torch.where(ref > 0, gain, torch.ones_like(gain))
            w = self.gp.to(x.dtype)
            num = (w * gain * counts).sum(dim=1, keepdim=True)
            den = (w * kept * sens).sum(dim=1, keepdim=True)
            num, den = self.smooth(num), self.smooth(den)
        return torch.where(den > 1e-3, num / den.clamp(min=1e-3), torch.zeros_like(num))


__all__ = ["NormConvPrior"]
