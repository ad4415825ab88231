"""The training loop on a tiny real store: loss falls, outputs land, errors are clear."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from badblock.cli import main
from badblock.errors import BadInputError
from badblock.inference import Predictor
from badblock.train.loop import TrainingError, train
from badblock.utils.checkpoint import load_checkpoint
from tests.train.trainer_store import make_store, tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    make_store(root / "store")
    return root


def _run(tmp_path, store_dir, **sets):
    (tmp_path / "store").symlink_to(store_dir / "store")
    return train(tiny_config(tmp_path, **sets))


def test_loss_falls_and_outputs_land(tmp_path, store_dir):
    run = _run(tmp_path, store_dir, **{"train.epochs": 6, "optim.lr": 0.003,
                                       "train.tensorboard": True})
    train_loss = np.loadtxt(run / "train_loss.txt")
    assert train_loss.shape == (6,)
    assert train_loss[-1] < 0.6 * train_loss[0]
    for name in ("test_loss.txt", "recon_loss.txt"):
        assert np.loadtxt(run / name).shape == (6,)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 7))
    for key in ("train_loss", "val_loss", "lr", "samples_per_s", "epoch_time_s", "peak_rss_mb",
                "peak_gpu_mb", "nrmse_net", "nrmse_baseline", "collapse"):
        assert key in records[-1]
    # scored against the measured scans; the synthetic store's noiseless truth only logged
    assert records[-1]["reference"] == "measured"
    assert records[-1]["nrmse_net_truth"] > 0
    assert (run / "progress.png").read_bytes()[:4] == b"\x89PNG"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert yaml.safe_load((run / "config.resolved.yaml").read_text())["train"]["epochs"] == 6
    final = load_checkpoint(run / "checkpoint_final.pt")
    assert final["step"] == 12 and final["epoch"] == 6
    assert final["data"]["context"] == 2 and final["model_config"]["width"] == 4
    for name in ("checkpoint_latest.pt", "checkpoint_best.pt"):
        assert (run / name).exists()


def test_predictor_reproduces_the_network(tmp_path, store_dir, capsys):
    # visdom asked for without a server (or package): one warning, training goes on
    run = _run(tmp_path, store_dir, **{"train.epochs": 1, "data.mask_channel": True,
                                       "train.visdom": True, "train.visdom_port": 9})
    lines = capsys.readouterr().err.splitlines()
    assert len([line for line in lines if "warning" in line and "visdom" in line]) == 1
    # float32: on a CPU with bf16 units the predictor would default to bf16 autocast
    pred = Predictor.from_checkpoint(run / "checkpoint_final.pt", "cpu", amp=False)
    assert pred.context == 2 and pred.mask_channel
    rng = np.random.default_rng(0)
    stacks = rng.poisson(5.0, size=(3, 5, 36, 64)).astype(np.float32)
    masks = np.zeros_like(stacks)
    masks[:, :, 10:20, 20:30] = 0.5
    out = pred(stacks, masks)
    assert out.shape == (3, 36, 64) and out.dtype == np.float32
    # the same computation by hand: normalise by the stack max, network, scale back
    from badblock.models import UNet

    ck = load_checkpoint(run / "checkpoint_final.pt")
    net = UNet(**ck["model_config"])
    net.load_state_dict(ck["model"])
    net.eval()
    x = torch.from_numpy(stacks)
    scale = x.amax(dim=(1, 2, 3), keepdim=True) + 1e-8
    with torch.no_grad():
        y = net(torch.cat([x / scale, torch.from_numpy(masks[:, 2:3])], 1)) * scale
    np.testing.assert_allclose(out, y[:, 0].numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(BadInputError, match="mask"):
        pred(stacks)  # trained with the mask channel: the mask is required


@pytest.mark.parametrize("task", ["denoise", "paired"])
def test_other_tasks_train(tmp_path, store_dir, task):
    # denoise also covers thinning in the loader (numpy) instead of on the device
    sets = {"train.epochs": 1, "data.task": task, "data.target": "measured",
            "data.thin_on": "loader" if task == "denoise" else "device"}
    if task == "paired":
        sets["data.target_store"] = "store"  # a store paired with itself: identity task
    run = _run(tmp_path, store_dir, **sets)
    rec = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(rec["nrmse_net"]) and np.isfinite(rec["train_loss"])
    if task == "paired":
        assert rec["nrmse_baseline"] < 1e-6  # input == target: the baseline is exact


def test_nan_loss_stops_with_a_clear_message(tmp_path, store_dir):
    with pytest.raises(TrainingError, match="loss became nan|loss became inf"):
        _run(tmp_path, store_dir, **{"optim.lr": "1.0e+30", "train.epochs": 3})


def test_config_typos_and_truncated_checkpoint_exit_2(tmp_path, store_dir, capsys):
    (tmp_path / "store").symlink_to(store_dir / "store")
    args = ["train", "--output", str(tmp_path), "--set", "run.threads=1"]
    assert main(args + ["--set", "train.epoch=3"]) == 2
    assert "did you mean 'train.epochs'" in capsys.readouterr().err
    run = tmp_path / "train"
    run.mkdir()
    (run / "checkpoint_latest.pt").write_bytes(b"PK\x03\x04 half a zip file")
    assert main(args + ["--set", "model.width=4", "--set", "data.batch_size=4"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint_latest.pt" in err and "truncated" in err
    assert len(err.strip().splitlines()[-1]) < 400  # one line, no traceback


def test_restarting_a_finished_run_changes_nothing(tmp_path, store_dir):
    run = _run(tmp_path, store_dir, **{"train.epochs": 1})
    before = (run / "checkpoint_final.pt").read_bytes()
    lines = (run / "train_loss.txt").read_text()
    train(tiny_config(tmp_path, **{"train.epochs": 1}))
    assert (run / "train_loss.txt").read_text() == lines
    assert (run / "checkpoint_final.pt").read_bytes() == before  # left as it was
    after = load_checkpoint(run / "checkpoint_final.pt")
    ref = torch.load(__import__("io").BytesIO(before), weights_only=True)
    for k, v in ref["model"].items():
        assert torch.equal(v, after["model"][k])


def test_per_lor_prior_network_trains_on_lost_counts_and_repairs_alike(tmp_path, store_dir):
    # the mini preset's network: per-LOR working, every plane's mask, the normconv prior as
    # the last channel which the network corrects, the lost-count target, averaged weights,
    # 1-3 dead blocks per sample
    sets = {"train.epochs": 2, "data.mask_channel": True, "data.mask_stack": True,
            "data.normalise": "mean", "model.per_lor": True,
            "model.prior_widths": [0.7, 1.5, 1.0], "model.prior_residual": True,
            "loss.damaged_only": True, "loss.target": "lost", "train.ema": 0.9,
            "data.blocks_per_sample": [1, 3], "augment.view_roll": 0.0,
            "augment.radial_flip": 0.0, "model.dead_weight": 0.25}
    run = _run(tmp_path, store_dir, **sets)
    rec = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(rec["nrmse_net"]) and np.isfinite(rec["train_loss"])
    ck = load_checkpoint(run / "checkpoint_final.pt")
    assert ck["data"]["per_lor"] is True and ck["data"]["prior_widths"] == [0.7, 1.5, 1.0]
    assert ck["data"]["margin"] == 18 and ck["data"]["scanner"] == "mini"
    assert ck["data"]["dead_weight"] == 0.25
    assert ck["model_config"]["in_channels"] == 12 and ck["model_config"]["residual_channel"] == 11
    # the averaged weights are what is saved for repair; the raw ones ride along for resume
    assert "model_raw" in ck
    assert any(not torch.equal(ck["model"][k], ck["model_raw"][k]) for k in ck["model"]
               if ck["model"][k].dtype.is_floating_point)
    pred = Predictor.from_checkpoint(run / "checkpoint_final.pt", "cpu")
    from badblock.physics import get_scanner
    from badblock.physics.mask import real_lor_count

    sens = real_lor_count(get_scanner("mini"))[:5]  # 5 planes of real-LOR counts
    wide = 36 + 2 * pred.margin
    sens_w = np.concatenate([sens[:, -18:], sens, sens[:, :18]], axis=1)[None].repeat(2, 0)
    rng = np.random.default_rng(1)
    masks = np.zeros((2, 5, wide, 64), np.float32)
    masks[:, :, 28:38, 20:30] = 1.0
    stacks = (rng.poisson(5.0, size=masks.shape) * (1 - masks) * (sens_w > 0)).astype(np.float32)
    out = pred(stacks, masks, sens_w)
    assert out.shape == (2, 36, 64) and np.isfinite(out).all()
    # per-LOR working: bins without real LORs come out exactly 0
    gaps = sens[2] == 0
    assert gaps.any() and np.all(out[:, gaps] == 0)
    # the neighbouring planes' masks matter: the same counts with another plane damaged differ
    other = masks.copy()
    other[:, 1, 28:38, 40:50] = 1.0
    assert not np.allclose(out, pred(stacks, other, sens_w))
    # the recorded output rule (dead_weight 0.25) moved the fully dead bins and only those
    assert pred.dead_weight == 0.25
    pred.dead_weight = 1.0
    own = pred(stacks, masks, sens_w)
    dead = masks[:, 2, pred.margin:pred.margin + 36] >= 1
    assert dead.any() and np.array_equal(own[~dead], out[~dead])
    assert not np.allclose(own[dead], out[dead])


def test_mask_stack_needs_the_mask_channel(tmp_path, store_dir):
    with pytest.raises(BadInputError, match="mask_stack"):
        _run(tmp_path, store_dir, **{"train.epochs": 1, "data.mask_stack": True})


def test_per_lor_refuses_geometric_augmentation(tmp_path, store_dir):
    with pytest.raises(BadInputError, match="view_roll"):
        _run(tmp_path, store_dir, **{"train.epochs": 1, "model.per_lor": True})
    with pytest.raises(BadInputError, match="train.ema"):
        train(tiny_config(tmp_path, **{"train.ema": 1.0}))
