"""slurm/*.sbatch on the project's real local Slurm cluster, host runtime, tiny simulated data:
preprocess then train, two-task DDP (gloo), preemption with requeue and resume, fake GPU gres."""

from __future__ import annotations

import shlex
import subprocess
import time

import pytest

from tests.cluster.conftest import (
    ROOT,
    epochs_logged,
    in_queue,
    job_state,
    sbatch,
    scontrol_job,
    slurm_env,
    wait_job,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TINY = ["--set", "data.batch_size=4", "--set", "model.width=4", "--set", "train.val_batches=1",
        "--set", "train.tensorboard=false", "--set", "data.epoch_size=16"]


@pytest.fixture(scope="module")
def pipeline(slurm, tmp_path_factory):
    """Simulate 2 tiny scans here, then `sbatch preprocess` and `sbatch train` after it."""
    base = tmp_path_factory.mktemp("pipeline")
    subprocess.run(["badblock", "simulate", "--scans", "2", "--counts", "2e5", "-o",
                    str(base / "sim")], env=slurm, check=True, capture_output=True, timeout=300)
    out = base / "out"
    env = slurm_env(BADBLOCK_RUNTIME="host", BADBLOCK_DATA=str(base / "sim"),
                    BADBLOCK_OUTPUT=str(out))
    common = ["--cpus-per-task=1", "--time=10", f"--output={base}/%x-%j.batch.log"]
    pre = sbatch(env, *common, str(ROOT / "slurm/preprocess.sbatch"), str(base / "sim"),
                 cwd=base)
    train = sbatch(env, *common, f"--dependency=afterok:{pre}", "--gres=gpu:1",
                   str(ROOT / "slurm/train.sbatch"), "--epochs", "2", *TINY, cwd=base)
    return {"base": base, "out": out, "env": env, "pre": pre, "train": train,
            "states": (wait_job(env, pre), wait_job(env, train))}


def test_preprocess_then_train_complete(pipeline):
    out = pipeline["out"]
    pre_state, train_state = pipeline["states"]
    assert pre_state == ("COMPLETED", "0:0"), (out / "logs").iterdir()
    assert train_state == ("COMPLETED", "0:0")
    assert (out / "store" / "manifest.json").exists()
    run = out / "train"
    for name in ["checkpoint_latest.pt", "checkpoint_final.pt", "train_loss.txt",
                 "test_loss.txt", "log.jsonl", "config.resolved.yaml"]:
        assert (run / name).exists(), name
    assert epochs_logged(run) == [1, 2]
    # The stage's own logs land in the output path, named after the job.
    train_log = out / "logs" / f"badblock-train-{pipeline['train']}.err"
    assert "finished:" in train_log.read_text()
    assert (out / "logs" / f"badblock-preprocess-{pipeline['pre']}.err").exists()


def test_two_task_ddp_training(pipeline, tmp_path):
    env = slurm_env(BADBLOCK_RUNTIME="host", BADBLOCK_OUTPUT=str(tmp_path))
    store = pipeline["out"] / "store"
    job = sbatch(env, "--ntasks-per-node=2", "--cpus-per-task=1", "--time=10",
                 f"--output={tmp_path}/batch.log", str(ROOT / "slurm/train.sbatch"),
                 "--epochs", "1", *TINY, "--set", f"data.store={store}", cwd=tmp_path)
    assert wait_job(env, job) == ("COMPLETED", "0:0"), (tmp_path / "batch.log").read_text()
    err = (tmp_path / "logs" / f"badblock-train-{job}.err").read_text()
    assert "2 process(es)" in err
    assert err.count("finished:") == 1  # only rank 0 reports and writes
    assert epochs_logged(tmp_path / "train") == [1]


def test_preempted_training_requeues_and_resumes(pipeline, tmp_path):
    env = slurm_env(BADBLOCK_RUNTIME="host", BADBLOCK_OUTPUT=str(tmp_path))
    store = pipeline["out"] / "store"
    epochs = 8
    batch_log = tmp_path / "batch.log"
    job = sbatch(env, "--cpus-per-task=1", "--time=10", f"--output={batch_log}",
                 str(ROOT / "slurm/train.sbatch"), "--epochs", str(epochs), *TINY,
                 "--set", "data.epoch_size=64", "--set", f"data.store={store}", cwd=tmp_path)
    run = tmp_path / "train"
    end = time.monotonic() + 120
    while not epochs_logged(run):  # training is under way
        assert time.monotonic() < end and in_queue(env, job), batch_log.read_text()
        time.sleep(0.3)
    # What --signal=B:USR2@300 does before the time limit: USR2 to the batch shell.
    subprocess.run(["scancel", "-b", "-s", "USR2", job], env=env, check=True, timeout=60)
    end = time.monotonic() + 60
    while int(scontrol_job(env, job).get("Restarts", "0")) < 1:
        assert time.monotonic() < end, batch_log.read_text()
        time.sleep(0.3)
    # The requeued job starts again after AuthInfo=cred_expire (10 s on the local cluster);
    # forcing StartTime=now this early gets it killed ("Job credential revoked").
    assert wait_job(env, job) == ("COMPLETED", "0:0"), batch_log.read_text()
    assert epochs_logged(run) == list(range(1, epochs + 1))  # none lost, none repeated
    log = batch_log.read_text()
    assert "caught SIGUSR2" in log and "requeueing job" in log
    assert "restart 1" in log
    err = (tmp_path / "logs" / f"badblock-train-{job}.err").read_text()
    assert "USR2 received: saved" in err and "resuming epoch" in err and "finished:" in err
    assert (run / "checkpoint_final.pt").exists()


def test_fake_gpu_gres_reach_the_tasks(slurm, tmp_path):
    """--gres=gpu:2 with two tasks: each task sees both GPUs (no --gpus-per-task) and the
    docker runtime hands exactly those to the container."""
    (tmp_path / "data").mkdir()
    for runtime in ["host", "docker"]:
        env = slurm_env(BADBLOCK_RUNTIME=runtime, BADBLOCK_DRY_RUN="1",
                        BADBLOCK_OUTPUT=str(tmp_path / runtime), BADBLOCK_DATA=str(tmp_path))
        log = tmp_path / f"{runtime}.log"
        job = sbatch(env, "--gres=gpu:2", "--ntasks-per-node=2", "--cpus-per-task=1",
                     f"--output={log}", str(ROOT / "slurm/train.sbatch"), cwd=tmp_path)
        assert wait_job(env, job) == ("COMPLETED", "0:0")
        text = log.read_text()
        assert "GPUs 0,1" in text and "1 node(s) x 2 task(s)" in text
        command = shlex.split(text.strip().splitlines()[-1])
        assert command[0] == "srun" and "--gpus-per-task" not in " ".join(command)
        if runtime == "docker":
            assert command[command.index("--gpus") + 1] == '"device=0,1"'


def test_failing_stage_is_reported_failed(slurm, tmp_path):
    env = slurm_env(BADBLOCK_RUNTIME="host", BADBLOCK_OUTPUT=str(tmp_path))
    job = sbatch(env, "--cpus-per-task=1", f"--output={tmp_path}/batch.log",
                 str(ROOT / "slurm/preprocess.sbatch"), str(tmp_path / "no-such-scans"),
                 cwd=tmp_path)
    state, code = wait_job(env, job)
    assert state == "FAILED" and code == "2:0"
    assert "no-such-scans" in (tmp_path / "logs" / f"badblock-preprocess-{job}.err").read_text()
    assert job_state(env, job)[0] == "FAILED"
