"""Validation after each epoch: the loss, and NRMSE on the damaged bins of the network's repair
next to the simple baseline "divide partly damaged bins by 1 - f".

The damaged bins are those with f > 0 of the centre plane (every bin for the paired task).
The network is scored with what real data has, the complete measured validation plane ``m``,
never the truth. The damaged input ``y`` is a binomial thinning of ``m ~ Poisson(lam)`` with
survival ``1 - f``, so ``y`` and the lost counts ``l = m - y`` are independent Poisson variables
(means ``(1 - f) lam`` and ``f lam``), and ``l`` is independent of everything the network sees.
Hence ``r = l / f`` is an unbiased estimate of the truth ``lam`` that is independent of the
repair ``x``, with variance ``lam / f``, and

    E (x - r)^2 = E (x - lam)^2 + lam / f,     E r / f = lam / f,
    NRMSE = sqrt( (sum (x - r)^2 - sum r / f) / (sum r^2 - sum r / f) )

over the damaged bins estimates the NRMSE against the truth without bias in each sum: it ranks
models as the truth would, in expectation (comparing with ``m`` itself would not: on partly
damaged bins ``E (x - m)^2`` rewards copying the noise of ``y``). For the paired task ``r`` is
the target plane, uncorrected. Sums run over all validation samples of all ranks, in float64;
``checkpoint_best.pt`` is the epoch where this NRMSE is lowest. When the store also holds the
noiseless truth, the plain NRMSE against it is logged (``nrmse_net_truth``,
``nrmse_baseline_truth``) and never used for a choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from badblock.metrics import nrmse_estimate
from badblock.train import distributed as D
from badblock.train.batch import Batch


def error_sums(net: torch.Tensor, b: Batch, paired: bool, loss: torch.Tensor) -> torch.Tensor:
    """float64 ``[9]`` over the damaged region: against the held-out estimate ``r`` (module
    docstring) the squared error of the network and of the baseline, ``sum r / f`` (their noise
    term; 0 for the paired task) and ``sum r^2``; against the truth (zeros without one) the
    squared errors and ``sum truth^2``; loss times samples; samples. ``net``: the repair
    ``[N, 1, V, B]`` in counts; ``m`` is ``b.measured`` (else ``b.target`` in counts, the
    measured plane unless the training target is the truth)."""
    measured = (b.measured if b.measured is not None else b.target * b.scale).to(torch.float64)
    f = b.damage.to(torch.float64)
    y = b.inp_centre.to(torch.float64)
    base = torch.where(f < 1.0, y / (1.0 - f).clamp(min=1e-6), torch.zeros_like(f))
    zero = torch.zeros((), dtype=torch.float64, device=net.device)
    if paired:
        region, ref, noise = torch.ones_like(f), measured, zero
    else:
        region = (f > 0).to(torch.float64)
        fs = torch.where(f > 0, f, torch.ones_like(f))
        ref = (measured - y) / fs
        noise = (ref / fs * region).sum()
    net64 = net.to(torch.float64)
    out = [(((net64 - ref) ** 2) * region).sum(), (((base - ref) ** 2) * region).sum(), noise,
           ((ref ** 2) * region).sum()]
    if b.truth is None:
        out += [zero] * 3
    else:
        t = b.truth.to(torch.float64)
        out += [(((net64 - t) ** 2) * region).sum(), (((base - t) ** 2) * region).sum(),
                ((t ** 2) * region).sum()]
    n = b.x.shape[0]
    return torch.stack(out + [loss.detach().to(torch.float64) * n,
                              torch.tensor(float(n), dtype=torch.float64, device=net.device)])


@torch.inference_mode()
def validate(model: torch.nn.Module, val_ds, prepare: Callable[[dict], Batch], loss_of, *,
             batch_size: int, device: torch.device, env, amp: bool,
             channels_last: bool, paired: bool, truth: bool) -> dict:
    """Run ``model`` (eval mode) over this rank's share of ``val_ds``; ``prepare`` turns a
    loader batch into a :class:`~badblock.train.batch.Batch` (no augmentation), ``loss_of(counts,
    batch)`` gives the training loss of the repaired counts (``[N, 1, V, B]``). Returns
    ``val_loss``, ``nrmse_net``, ``nrmse_baseline`` (estimated from the measured planes: what
    the checkpoint choice uses), ``reference`` ('measured') and, with ``truth`` (every validation
    scan has a noiseless truth), ``nrmse_net_truth`` and ``nrmse_baseline_truth``; the same on
    every rank."""
    from badblock.data.dataset import collate_samples

    n = len(val_ds)
    idx = list(range(env.rank, n, env.world_size))
    loader = DataLoader(torch.utils.data.Subset(val_ds, idx), batch_size=batch_size,
                        num_workers=0, collate_fn=collate_samples)
    sums = torch.zeros(9, dtype=torch.float64, device=device)
    for raw in loader:
        b = prepare(raw)
        x = b.x.contiguous(memory_format=torch.channels_last) if channels_last else b.x
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(x)
        counts = b.counts(pred)
        sums += error_sums(counts, b, paired, loss_of(counts, b))
    D.all_reduce_sum(sums)
    err_net, err_base, noise, ref2, err_net_t, err_base_t, ref2_t, loss_sum, count = \
        sums.tolist()
    ref2_t = max(ref2_t, 1e-30)
    out = {"val_loss": loss_sum / max(count, 1.0),
           "nrmse_net": nrmse_estimate(err_net, noise, ref2),
           "nrmse_baseline": nrmse_estimate(err_base, noise, ref2),
           "reference": "measured"}
    if truth:
        out["nrmse_net_truth"] = math.sqrt(err_net_t / ref2_t)
        out["nrmse_baseline_truth"] = math.sqrt(err_base_t / ref2_t)
    return out


__all__ = ["validate", "error_sums", "nrmse_estimate"]  # the estimate lives in metrics
