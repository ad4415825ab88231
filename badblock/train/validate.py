"""Validation after each epoch: the loss, and NRMSE on the damaged bins of the network's repair
next to the simple baseline "divide partly damaged bins by 1 - f".

The damaged bins are those with f > 0 of the centre plane (every bin for the paired task).
The network is scored against what real data has: the *complete measured* validation plane
``m`` (for the paired task its target plane), whatever the training target is,

    NRMSE = sqrt( sum_region (repair - m)^2 / sum_region m^2 ),

summed over all validation samples of all ranks, in float64; ``checkpoint_best.pt`` is the
epoch where it is lowest. Why this ranks models like the truth does: the damaged input is a
binomial thinning ``y`` of ``m ~ Poisson(lam)``, so ``y`` and the lost counts ``l = m - y`` are
independent Poisson variables and ``l`` is independent of everything the network sees. With
``l_hat = repair - y`` the network's estimate of the lost counts,
``E (repair - m)^2 = E (l_hat - l)^2 = E (l_hat - f lam)^2 + Var(l)``: the error against the
measured scan is the lost-count error against the truth plus a constant no model changes. When
the store also holds the noiseless truth, the same NRMSE against it is logged
(``nrmse_net_truth``, ``nrmse_baseline_truth``) and never used for a choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from badblock.train import distributed as D
from badblock.train.batch import Batch


def error_sums(net: torch.Tensor, b: Batch, paired: bool, loss: torch.Tensor) -> torch.Tensor:
    """float64 ``[8]``: over the damaged region, the squared error of the network and of the
    baseline against the measured plane and the squared measured plane; the same three against
    the truth (zeros without one); loss times samples; samples. ``net``: the repair
    ``[N, 1, V, B]`` in counts; the measured plane is ``b.measured`` (else ``b.target`` in
    counts, which is the measured plane unless the training target is the truth)."""
    measured = b.measured if b.measured is not None else b.target * b.scale
    f = b.damage
    base = torch.where(f < 1.0, b.inp_centre / (1.0 - f).clamp(min=1e-6), torch.zeros_like(f))
    region = (f > 0).to(torch.float64) if not paired else torch.ones_like(f, dtype=torch.float64)
    net64, base64 = net.to(torch.float64), base.to(torch.float64)
    out = []
    for ref in (measured, b.truth):
        if ref is None:
            out += [torch.zeros((), dtype=torch.float64, device=net.device)] * 3
            continue
        ref64 = ref.to(torch.float64)
        out += [(((net64 - ref64) ** 2) * region).sum(), (((base64 - ref64) ** 2) * region).sum(),
                ((ref64 ** 2) * region).sum()]
    n = b.x.shape[0]
    return torch.stack(out + [loss.detach().to(torch.float64) * n,
                              torch.tensor(float(n), dtype=torch.float64, device=net.device)])


@torch.no_grad()
def validate(model: torch.nn.Module, val_ds, prepare: Callable[[dict], Batch], loss_fn, *,
             batch_size: int, crop: tuple[int, int], device: torch.device, env, amp: bool,
             channels_last: bool, paired: bool, truth: bool) -> dict:
    """Run ``model`` (eval mode) over this rank's share of ``val_ds``; ``prepare`` turns a
    loader batch into a :class:`~badblock.train.batch.Batch` (no augmentation). Returns
    ``val_loss``, ``nrmse_net``, ``nrmse_baseline`` (against the measured planes: what the
    checkpoint choice uses), ``reference`` ('measured') and, with ``truth`` (every validation
    scan has a noiseless truth), ``nrmse_net_truth`` and ``nrmse_baseline_truth``; the same on
    every rank."""
    from badblock.data.dataset import collate_samples

    n = len(val_ds)
    idx = list(range(env.rank, n, env.world_size))
    loader = DataLoader(torch.utils.data.Subset(val_ds, idx), batch_size=batch_size,
                        num_workers=0, collate_fn=collate_samples)
    sums = torch.zeros(8, dtype=torch.float64, device=device)
    a, c = crop
    for raw in loader:
        b = prepare(raw)
        x = b.x.contiguous(memory_format=torch.channels_last) if channels_last else b.x
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(x)
        pred = pred.float()[..., a:c, :]
        loss = loss_fn(pred, b.target, b.damage)
        sums += error_sums(pred * b.scale, b, paired, loss)
    D.all_reduce_sum(sums)
    err_net, err_base, ref2, err_net_t, err_base_t, ref2_t, loss_sum, count = sums.tolist()
    ref2, ref2_t = max(ref2, 1e-30), max(ref2_t, 1e-30)
    out = {"val_loss": loss_sum / max(count, 1.0),
           "nrmse_net": math.sqrt(err_net / ref2),
           "nrmse_baseline": math.sqrt(err_base / ref2),
           "reference": "measured"}
    if truth:
        out["nrmse_net_truth"] = math.sqrt(err_net_t / ref2_t)
        out["nrmse_baseline_truth"] = math.sqrt(err_base_t / ref2_t)
    return out


__all__ = ["validate", "error_sums"]
