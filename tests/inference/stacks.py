"""A small context stack and a mask whose every plane differs (shared by the inference tests)."""

from __future__ import annotations

import torch


def stack_and_mask() -> tuple[torch.Tensor, torch.Tensor]:
    inp = torch.arange(2 * 5 * 4 * 8, dtype=torch.float32).view(2, 5, 4, 8)
    mask = torch.zeros(2, 5, 4, 8)
    for p in range(5):
        mask[:, p, :, p] = 0.1 * (p + 1)  # every plane's mask is different
    return inp, mask
