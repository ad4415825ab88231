"""Validation sums: network and divide-by-(1 - f) baseline errors over the damaged bins, against
the measured plane (what checkpoint selection uses) and, logged only, the truth."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from badblock.data.store_writer import write_store
from badblock.physics.scanners import get_scanner
from badblock.train.batch import Batch
from badblock.train.loop import train
from badblock.train.validate import error_sums
from badblock.utils.checkpoint import load_checkpoint
from tests.train.trainer_store import synthetic_scan, tiny_config

torch.set_num_threads(1)


def _batch(with_truth: bool, measured: bool = False) -> Batch:
    f = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 1, 4)
    inp = torch.tensor([4.0, 3.0, 0.0, 6.0]).view(1, 1, 1, 4)
    scale = torch.full((1, 1, 1, 1), 2.0)
    target = torch.tensor([4.0, 8.0, 10.0, 8.0]).view(1, 1, 1, 4) / scale
    truth = torch.tensor([5.0, 7.0, 9.0, 8.0]).view(1, 1, 1, 4) if with_truth else None
    meas = torch.tensor([4.0, 8.0, 10.0, 8.0]).view(1, 1, 1, 4) if measured else None
    return Batch(x=torch.zeros(1, 6, 1, 4), target=target, damage=f, scale=scale,
                 inp_centre=inp, truth=truth, measured=meas)


def test_sums_over_the_damaged_bins_against_the_measured_plane():
    b = _batch(False)
    net = torch.tensor([1.0, 6.0, 11.0, 9.0]).view(1, 1, 1, 4)
    got = error_sums(net, b, False, torch.tensor(0.25)).tolist()
    ref = np.array([4.0, 8.0, 10.0, 8.0])
    region = np.array([0, 1, 1, 1])  # f > 0
    base = np.array([4.0, 6.0, 0.0, 8.0])  # 3 / 0.5, dead bin 0, 6 / 0.75
    want = [float(((net.numpy().ravel() - ref) ** 2 * region).sum()),
            float(((base - ref) ** 2 * region).sum()), float((ref ** 2 * region).sum()),
            0.0, 0.0, 0.0, 0.25, 1.0]
    assert got == want == [6.0, 104.0, 228.0, 0.0, 0.0, 0.0, 0.25, 1.0]
    assert math.isclose(math.sqrt(got[0] / got[2]), math.sqrt(6 / 228))


def test_truth_is_summed_apart_and_the_paired_task_scores_every_bin():
    b = _batch(True, measured=True)
    net = torch.tensor([5.0, 7.0, 9.0, 8.0]).view(1, 1, 1, 4)  # = the truth
    got = error_sums(net, b, False, torch.tensor(0.0)).tolist()
    # against the measured plane: (7-8)^2 + (9-10)^2 + 0; against the truth: 0
    assert got[0] == 2.0 and got[3] == 0.0 and got[5] == 49 + 81 + 64
    # a training target that is the truth does not change the measured reference
    b_truth_target = Batch(**{**b.__dict__, "target": b.truth / b.scale})
    assert error_sums(net, b_truth_target, False, torch.tensor(0.0)).tolist()[:3] == got[:3]
    # paired: the whole plane counts
    got = error_sums(net, b, True, torch.tensor(0.0)).tolist()
    assert got[0] == 1.0 + 1.0 + 1.0 + 0.0 and got[2] == 16 + 64 + 100 + 64


def test_checkpoint_choice_does_not_change_when_the_truth_is_removed(tmp_path):
    """Two stores with the same counts, one with the noiseless truth and one without: every
    validation score the selection uses, and checkpoint_best.pt itself, are identical."""
    sc = get_scanner("mini")
    scans, truths = {}, {}
    for i in range(3):
        scans[f"scan_{i:03d}"], truths[f"scan_{i:03d}"] = synthetic_scan(10 + i)
    runs = {}
    for label, tr in (("with", truths), ("without", None)):
        root = tmp_path / label
        write_store(root / "store", scans, truths=tr, val=["scan_002"], segments=sc.segments,
                    tof_order="siemens", scanner="mini")
        runs[label] = train(tiny_config(root, **{"train.epochs": 4, "optim.lr": 0.003}))
    logs = {k: [json.loads(line) for line in (v / "log.jsonl").read_text().splitlines()]
            for k, v in runs.items()}
    assert [r["nrmse_net"] for r in logs["with"]] == [r["nrmse_net"] for r in logs["without"]]
    assert all("nrmse_net_truth" in r for r in logs["with"])
    assert not any("nrmse_net_truth" in r for r in logs["without"])
    best = {k: load_checkpoint(v / "checkpoint_best.pt") for k, v in runs.items()}
    assert best["with"]["epoch"] == best["without"]["epoch"]
    for key, value in best["with"]["model"].items():
        assert torch.equal(value, best["without"]["model"][key]), key
