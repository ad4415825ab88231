"""The weight average: the warm-up decay, floating-point entries averaged, counters copied."""

from __future__ import annotations

import torch

from badblock.train.ema import averaged_copy, update_ema


def test_average_follows_the_warm_up_decay():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = averaged_copy(model)
    assert not ema.training and not any(p.requires_grad for p in ema.parameters())
    start = ema[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    update_ema(ema, model, 0.99, step=0)  # decay min(0.99, 1/10) = 0.1
    torch.testing.assert_close(ema[0].weight, 0.1 * start + 0.9 * (start + 1.0))
    assert int(ema[1].num_batches_tracked) == 7
    before = ema[0].weight.clone()
    update_ema(ema, model, 0.5, step=1000)  # decay capped at 0.5
    torch.testing.assert_close(ema[0].weight, 0.5 * before + 0.5 * model[0].weight)
