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
from badblock.train.validate import error_sums, nrmse_estimate
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
    return Batch(x=torch.zeros(1, 6, 1, 4), out_scale=scale, crop=(0, 1), target=target,
                 damage=f, scale=scale, inp_centre=inp, truth=truth, measured=meas)


def test_sums_against_the_held_out_lost_counts():
    b = _batch(False)  # m = target x scale = 4, 8, 10, 8; y = 4, 3, 0, 6; f = 0, .5, 1, .25
    net = torch.tensor([1.0, 6.0, 11.0, 9.0]).view(1, 1, 1, 4)
    got = error_sums(net, b, False, torch.tensor(0.25)).tolist()
    # r = (m - y) / f on f > 0: 5 / .5 = 10, 10 / 1 = 10, 2 / .25 = 8
    # net: (6-10)^2 + (11-10)^2 + (9-8)^2 = 18; divide (6, 0, 8): 16 + 100 + 0 = 116
    # noise sum r / f = 20 + 10 + 32 = 62; sum r^2 = 264; no truth: three zeros
    assert got == [18.0, 116.0, 62.0, 264.0, 0.0, 0.0, 0.0, 0.25, 1.0]
    assert nrmse_estimate(18.0, 62.0, 264.0) == 0.0  # noise larger than the error: clamped
    assert math.isclose(nrmse_estimate(100.0, 62.0, 264.0), math.sqrt(38 / 202))


def test_truth_is_summed_apart_and_the_paired_task_scores_every_bin():
    b = _batch(True, measured=True)
    net = torch.tensor([5.0, 7.0, 9.0, 8.0]).view(1, 1, 1, 4)  # = the truth
    got = error_sums(net, b, False, torch.tensor(0.0)).tolist()
    # against r = 10, 10, 8: 9 + 1 + 0; against the truth: 0 over 49 + 81 + 64
    assert got[0] == 10.0 and got[4] == 0.0 and got[6] == 49 + 81 + 64
    # a training target that is the truth does not change the held-out reference
    b_truth_target = Batch(**{**b.__dict__, "target": b.truth / b.scale})
    assert error_sums(net, b_truth_target, False, torch.tensor(0.0)).tolist()[:4] == got[:4]
    # paired: the whole plane counts, against the target plane, no noise term
    got = error_sums(net, b, True, torch.tensor(0.0)).tolist()
    assert got[0] == 1.0 + 1.0 + 1.0 + 0.0 and got[2] == 0.0 and got[3] == 16 + 64 + 100 + 64


def test_held_out_estimate_is_unbiased_for_the_truth_error():
    """Over many Poisson draws and thinnings, (sum (x - r)^2 - sum r / f) averages to the
    truth's sum (x - lam)^2, computed here from lam directly, for a repair that copies the noise
    of y (divide) and one that does not (a fixed guess). Draws go in chunks of a batch each;
    the chunk means give the standard error."""
    rng = np.random.default_rng(3)
    n, chunk, chunks = 400, 100, 40
    lam = rng.uniform(2.0, 20.0, n)
    f = rng.choice([0.1, 0.3, 0.6, 1.0], n)
    guess = lam * rng.uniform(0.7, 1.3, n)
    est = {"divide": [], "guess": []}
    truth = {"divide": [], "guess": []}
    shape = (chunk, 1, 1, n)
    for _ in range(chunks):
        m = rng.poisson(lam, (chunk, n))
        y = rng.binomial(m, 1.0 - f)
        b = Batch(x=torch.zeros(shape), out_scale=torch.ones(chunk, 1, 1, 1), crop=(0, 1),
                  target=torch.zeros(shape),
                  damage=torch.tensor(np.broadcast_to(f, (chunk, n))).view(shape),
                  scale=torch.ones(chunk, 1, 1, 1), inp_centre=torch.tensor(y).view(shape),
                  measured=torch.tensor(m).view(shape))
        for name, x in (("divide", np.where(f < 1, y / np.maximum(1 - f, 1e-6), guess)),
                        ("guess", np.broadcast_to(guess, (chunk, n)))):
            s = error_sums(torch.tensor(x).view(shape), b, False, torch.tensor(0.0))
            est[name].append(float(s[0] - s[2]) / chunk)
            truth[name].append(float(((x - lam) ** 2).sum()) / chunk)
    for name in est:
        diff = np.asarray(est[name]) - np.asarray(truth[name])
        assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(chunks), name
    # ... and so the choice between the two agrees with the truth's.
    assert (np.mean(est["divide"]) < np.mean(est["guess"])) == \
        (np.mean(truth["divide"]) < np.mean(truth["guess"]))


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
