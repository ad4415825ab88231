"""Validation sums: network and divide-by-(1 - f) baseline errors over the damaged bins."""

from __future__ import annotations

import math

import numpy as np
import torch

from badblock.train.batch import Batch
from badblock.train.validate import error_sums


def _batch(with_truth: bool) -> Batch:
    f = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 1, 4)
    inp = torch.tensor([4.0, 3.0, 0.0, 6.0]).view(1, 1, 1, 4)
    scale = torch.full((1, 1, 1, 1), 2.0)
    target = torch.tensor([4.0, 8.0, 10.0, 8.0]).view(1, 1, 1, 4) / scale
    truth = torch.tensor([5.0, 7.0, 9.0, 8.0]).view(1, 1, 1, 4) if with_truth else None
    return Batch(x=torch.zeros(1, 6, 1, 4), target=target, damage=f, scale=scale,
                 inp_centre=inp, truth=truth)


def test_sums_over_the_damaged_bins_against_the_measured_plane():
    b = _batch(False)
    net = torch.tensor([1.0, 6.0, 11.0, 9.0]).view(1, 1, 1, 4)
    got = error_sums(net, b, "measured", False, torch.tensor(0.25)).tolist()
    ref = np.array([4.0, 8.0, 10.0, 8.0])
    region = np.array([0, 1, 1, 1])  # f > 0
    base = np.array([4.0, 6.0, 0.0, 8.0])  # 3 / 0.5, dead bin 0, 6 / 0.75
    want = [float(((net.numpy().ravel() - ref) ** 2 * region).sum()),
            float(((base - ref) ** 2 * region).sum()), float((ref ** 2 * region).sum()), 0.25,
            1.0]
    assert got == want == [6.0, 104.0, 228.0, 0.25, 1.0]
    assert math.isclose(math.sqrt(got[0] / got[2]), math.sqrt(6 / 228))


def test_truth_reference_and_the_paired_task_scores_every_bin():
    b = _batch(True)
    net = torch.tensor([5.0, 7.0, 9.0, 8.0]).view(1, 1, 1, 4)
    assert error_sums(net, b, "truth", False, torch.tensor(0.0))[0] == 0.0
    # paired: the whole plane counts, reference measured (truth ignored unless 'truth')
    got = error_sums(net, b, "measured", True, torch.tensor(0.0)).tolist()
    assert got[0] == 1.0 + 1.0 + 1.0 + 0.0 and got[2] == 16 + 64 + 100 + 64
