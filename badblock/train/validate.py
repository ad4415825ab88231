"""Validation after each epoch: the loss, and NRMSE on the damaged bins of the network's repair
next to the simple baseline "divide partly damaged bins by 1 - f".

The damaged bins are those with f > 0 of the centre plane (every bin for the paired task).
The reference is the noiseless truth when every validation scan has one (``info['reference']``
is 'truth'), else the measured complete plane:

    NRMSE = sqrt( sum_region (repair - ref)^2 / sum_region ref^2 )

summed over all validation samples of all ranks, in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from badblock.train import distributed as D
from badblock.train.batch import Batch


def error_sums(net: torch.Tensor, b: Batch, reference: str, paired: bool,
               loss: torch.Tensor) -> torch.Tensor:
    """float64 ``[5]``: squared error of the network and of the baseline over the damaged
    region, squared reference over it, loss times samples, samples. ``net``: the repair
    ``[N, 1, V, B]`` in counts."""
    ref = b.truth if (b.truth is not None and reference == "truth") else b.target * b.scale
    f = b.damage
    base = torch.where(f < 1.0, b.inp_centre / (1.0 - f).clamp(min=1e-6), torch.zeros_like(f))
    region = (f > 0).to(torch.float64) if not paired else torch.ones_like(f, dtype=torch.float64)
    ref64 = ref.to(torch.float64)
    n = b.x.shape[0]
    return torch.stack([
        (((net.to(torch.float64) - ref64) ** 2) * region).sum(),
        (((base.to(torch.float64) - ref64) ** 2) * region).sum(),
        ((ref64 ** 2) * region).sum(),
        loss.detach().to(torch.float64) * n,
        torch.tensor(float(n), dtype=torch.float64, device=net.device)])


@torch.inference_mode()
def validate(model: torch.nn.Module, val_ds, prepare: Callable[[dict], Batch], loss_fn, *,
             batch_size: int, crop: tuple[int, int], device: torch.device, env, amp: bool,
             channels_last: bool, reference: str, paired: bool) -> dict:
    """Run ``model`` (eval mode) over this rank's share of ``val_ds``; ``prepare`` turns a
    loader batch into a :class:`~badblock.train.batch.Batch` (no augmentation). Returns
    ``val_loss``, ``nrmse_net``, ``nrmse_baseline`` and ``reference``, the same on every
    rank."""
    from badblock.data.dataset import collate_samples

    n = len(val_ds)
    idx = list(range(env.rank, n, env.world_size))
    loader = DataLoader(torch.utils.data.Subset(val_ds, idx), batch_size=batch_size,
                        num_workers=0, collate_fn=collate_samples)
    sums = torch.zeros(5, dtype=torch.float64, device=device)
    a, c = crop
    for raw in loader:
        b = prepare(raw)
        x = b.x.contiguous(memory_format=torch.channels_last) if channels_last else b.x
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(x)
        pred = pred.float()[..., a:c, :]
        loss = loss_fn(pred, b.target, b.damage)
        sums += error_sums(pred * b.scale, b, reference, paired, loss)
    D.all_reduce_sum(sums)
    err_net, err_base, ref2, loss_sum, count = sums.tolist()
    ref2 = max(ref2, 1e-30)
    return {"val_loss": loss_sum / max(count, 1.0),
            "nrmse_net": math.sqrt(err_net / ref2),
            "nrmse_baseline": math.sqrt(err_base / ref2),
            "reference": reference}


__all__ = ["validate", "error_sums"]
