"""Training logs: loss files, JSON lines and the figure rewritten from the history each epoch;
the epoch record's sums and the collapse flag."""

from __future__ import annotations

import json

import numpy as np
import torch

from badblock.train.logs import RunLog, collapse_warning, epoch_message, epoch_record

VAL = {"val_loss": 0.5, "nrmse_net": 0.2, "nrmse_baseline": 0.3, "reference": "measured",
       "nrmse_net_truth": 0.1, "nrmse_baseline_truth": 0.25}


def test_epoch_record_from_the_running_sums():
    running = {"loss_sum": 3.0, "batches": 4, "samples": 64, "seconds": 2.0}
    rec = epoch_record(3, 40, False, running, VAL, 1e-3, 2, torch.device("cpu"))
    assert rec["train_loss"] == 0.75 and rec["samples_per_s"] == 32.0
    assert rec["epoch_time_s"] == 2.0 and rec["peak_gpu_mb"] == 0.0 and rec["peak_rss_mb"] > 0
    assert (rec["epoch"], rec["step"], rec["lr"], rec["nrmse_net"]) == (3, 40, 1e-3, 0.2)
    assert rec["collapse"] is False
    worse = dict(VAL, nrmse_net=0.4)
    assert epoch_record(3, 40, False, running, worse, 1e-3, 2, torch.device("cpu"))["collapse"]
    # within the warm-up a worse network is not yet a verdict
    assert not epoch_record(2, 40, False, running, worse, 1e-3, 2, torch.device("cpu"))["collapse"]
    text = epoch_message(rec, reset=True)
    assert text.startswith("epoch 3: train 0.75  val 0.5  NRMSE damaged bins vs measured: "
                           "network 0.2000  baseline 0.3000  (vs truth, not used for choices: "
                           "0.1000 / 0.2500)  lr 0.001")
    assert text.endswith("(optimizer reset)")
    assert "0.4000 > 0.3000" in collapse_warning(dict(rec, nrmse_net=0.4))


def test_run_log_rewrites_every_file_from_the_history(tmp_path):
    log = RunLog(tmp_path, tensorboard=False)
    history = []
    for e in range(1, 4):
        history.append({"epoch": e, "train_loss": 1.0 / e, "val_loss": 2.0 / e,
                        "nrmse_net": 0.1 * e, "nrmse_baseline": 0.3, "lr": 1e-3, "partial": False})
        log.write_epoch(history)
    first = (tmp_path / "progress.png").read_bytes()  # drawn at epoch 1, then rate-limited
    log.close()
    assert (tmp_path / "progress.png").read_bytes() != first  # close draws all 3 epochs
    assert np.loadtxt(tmp_path / "train_loss.txt").tolist() == [1.0, 0.5, 1.0 / 3]
    assert np.loadtxt(tmp_path / "test_loss.txt").tolist() == [2.0, 1.0, 2.0 / 3]
    assert np.allclose(np.loadtxt(tmp_path / "recon_loss.txt"), [0.1, 0.2, 0.3])
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]  # each epoch exactly once
    assert (tmp_path / "progress.png").read_bytes()[:4] == b"\x89PNG"
