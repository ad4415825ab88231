"""Preemption and resume: a run interrupted by SIGUSR2 (a real subprocess) and resumed ends with
bitwise the same weights as an uninterrupted run. Outside Slurm nothing is requeued; on the
project's local Slurm cluster (tests/cluster/slurm-local.sh) the trainer requeues its own job
with the real scontrol, and the requeued job finishes the run."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from badblock.train.loop import train
from badblock.utils.checkpoint import load_checkpoint
from tests.cluster.conftest import (
    epoch_lines,
    in_queue,
    sbatch,
    scontrol_job,
    slurm,  # noqa: F401 (the local cluster's fixture)
    wait_job,
)
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


def reference_run(tmp_path: Path, sets: dict) -> dict:
    """The uninterrupted run, in this process; its final checkpoint."""
    make_store(tmp_path / "store")
    ref_out = tmp_path / "ref"
    ref_out.mkdir()
    (ref_out / "store").symlink_to(tmp_path / "store")
    ref = load_checkpoint(train(tiny_config(ref_out, **sets)) / "checkpoint_final.pt")
    assert ref["step"] == sets["train.epochs"] * sets.get("data.epoch_size", 8) // 4
    return ref


def interrupted_folder(tmp_path: Path) -> Path:
    out = tmp_path / "int"
    out.mkdir()
    (out / "store").symlink_to(tmp_path / "store")
    return out


def assert_same_run(ref: dict, done: dict, ref_folder: Path, folder: Path) -> None:
    assert done["step"] == ref["step"]
    for key, value in ref["model"].items():
        assert torch.equal(value, done["model"][key]), key
    ref_opt, done_opt = ref["optimizer"]["state"], done["optimizer"]["state"]
    for i in ref_opt:
        assert torch.equal(ref_opt[i]["exp_avg"], done_opt[i]["exp_avg"])
    lines = (folder / "train" / "train_loss.txt").read_text().splitlines()
    assert len(lines) == ref_folder_epochs(ref_folder)  # each epoch logged once
    assert lines == (ref_folder / "train" / "train_loss.txt").read_text().splitlines()


def ref_folder_epochs(ref_folder: Path) -> int:
    return len((ref_folder / "train" / "train_loss.txt").read_text().splitlines())


def test_sigusr2_then_resume_gives_identical_weights(tmp_path):
    """Outside Slurm: USR2 saves and stops (no requeue is attempted); running the same command
    again continues to the end with the uninterrupted run's weights."""
    ref = reference_run(tmp_path, SETS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BADBLOCK_", "SLURM_"))}
    env.update(BADBLOCK_PROGRESS="0", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = interrupted_folder(tmp_path)
    cmd = [sys.executable, "-m", "badblock", "train", *overrides(out, **SETS)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_epoch_line(proc, out / "train" / "log.jsonl")
    proc.send_signal(signal.SIGUSR2)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "SIGUSR2 received" in stderr and "requeue" not in stderr
    mid = load_checkpoint(out / "train" / "checkpoint_latest.pt")
    assert 2 <= mid["step"] < 2 * EPOCHS, "the signal came too late to test a resume"
    assert not (out / "train" / "checkpoint_final.pt").exists()

    # the next run: same command, same folder -> continues to the end
    done = load_checkpoint(train(tiny_config(out, **SETS)) / "checkpoint_final.pt")
    assert_same_run(ref, done, tmp_path / "ref", out)


@pytest.mark.slurm
@pytest.mark.slow
def test_under_slurm_the_trainer_requeues_its_job(slurm, tmp_path):  # noqa: F811
    """`badblock train` as the whole job (no template): USR2 to it (`scancel -b -s USR2`), it
    saves and runs the real `scontrol requeue`; Slurm starts the job again, which resumes and
    ends with the uninterrupted run's weights, every epoch logged once."""
    sets = {**SETS, "data.epoch_size": 64}  # 16 steps an epoch: the signal lands mid-run
    ref = reference_run(tmp_path, sets)
    out = interrupted_folder(tmp_path)
    log = tmp_path / "job.log"
    cmd = shlex.join([sys.executable, "-m", "badblock", "train", *overrides(out, **sets)])
    job = sbatch(slurm, "--requeue", "--open-mode=append", "--cpus-per-task=1", "--time=10",
                 f"--output={log}", "--wrap", f"exec {cmd}", cwd=ROOT)
    end = time.monotonic() + 180
    while not ((out / "train" / "log.jsonl").exists() and
               (out / "train" / "log.jsonl").read_text().strip()):
        assert time.monotonic() < end and in_queue(slurm, job), log.read_text()
        time.sleep(0.2)
    subprocess.run(["scancel", "-b", "-s", "USR2", job], env=slurm, check=True, timeout=60)
    assert wait_job(slurm, job, timeout=300) == ("COMPLETED", "0:0"), log.read_text()
    assert int(scontrol_job(slurm, job).get("Restarts", "0")) == 1
    text = log.read_text()
    assert "SIGUSR2 received: saved" in text and "requeued the Slurm job" in text
    assert "resuming epoch" in text and "finished:" in text
    assert [e for e, _ in epoch_lines(text)] == list(range(1, EPOCHS + 1))
    done = load_checkpoint(out / "train" / "checkpoint_final.pt")
    assert_same_run(ref, done, tmp_path / "ref", out)
