"""Preemption and resume: a run interrupted by SIGUSR2 (a real subprocess) and resumed ends with
bitwise the same weights as an uninterrupted run; under Slurm the job is requeued."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from badblock.train.loop import train
from badblock.utils.checkpoint import load_checkpoint
from tests.train.trainer_store import make_store, overrides, tiny_config

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 10  # x 2 steps
# thinning on the device draws from the per-step seeded generator: the part of the random state
# that a resume must restore (samples themselves are a function of their index)
SETS = {"train.epochs": EPOCHS, "train.requeue": True, "data.thin_on": "device"}


def _wait_for_epoch_line(proc, log: Path, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if log.exists() and log.read_text().strip():
            return
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early: {proc.communicate()}")
        time.sleep(0.01)
    raise AssertionError("no epoch finished in time")


def test_sigusr2_then_resume_gives_identical_weights(tmp_path):
    make_store(tmp_path / "store")
    ref_out = tmp_path / "ref"
    ref_out.mkdir()
    (ref_out / "store").symlink_to(tmp_path / "store")
    ref = load_checkpoint(train(tiny_config(ref_out, **SETS)) / "checkpoint_final.pt")
    assert ref["step"] == 2 * EPOCHS

    # a fake scontrol records the requeue request that Slurm would get
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    record = tmp_path / "scontrol.args"
    (fake_bin / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {record}\n")
    (fake_bin / "scontrol").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BADBLOCK_", "SLURM_"))}
    env.update(PATH=f"{fake_bin}{os.pathsep}{env['PATH']}", SLURM_JOB_ID="4242",
               BADBLOCK_PROGRESS="0", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = tmp_path / "int"
    out.mkdir()
    (out / "store").symlink_to(tmp_path / "store")
    cmd = [sys.executable, "-m", "badblock", "train", *overrides(out, **SETS)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_epoch_line(proc, out / "train" / "log.jsonl")
    proc.send_signal(signal.SIGUSR2)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "SIGUSR2 received" in stderr
    assert record.read_text().split() == ["requeue", "4242"]
    mid = load_checkpoint(out / "train" / "checkpoint_latest.pt")
    assert 2 <= mid["step"] < 2 * EPOCHS, "the signal came too late to test a resume"
    assert not (out / "train" / "checkpoint_final.pt").exists()

    # the requeued job: same command, same folder -> continues to the end
    done = load_checkpoint(train(tiny_config(out, **SETS)) / "checkpoint_final.pt")
    assert done["step"] == ref["step"]
    for key, value in ref["model"].items():
        assert torch.equal(value, done["model"][key]), key
    ref_opt, done_opt = ref["optimizer"]["state"], done["optimizer"]["state"]
    for i in ref_opt:
        assert torch.equal(ref_opt[i]["exp_avg"], done_opt[i]["exp_avg"])
    lines = (out / "train" / "train_loss.txt").read_text().splitlines()
    assert len(lines) == EPOCHS  # each epoch logged once despite the interruption
    assert lines == (ref_out / "train" / "train_loss.txt").read_text().splitlines()
