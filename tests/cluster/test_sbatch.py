"""slurm/*.sbatch on the project's real local Slurm cluster, host runtime, tiny simulated data:
preprocess, train and repair with the templates' defaults (which must fit a 4-CPU node), the
templates finding the checkout and its Python themselves, two-task DDP (gloo), preemption by
hand and by Slurm's own time limit, each checked against an uninterrupted run, fake GPU gres."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.conftest import (
    PREEMPT_ARGS,
    ROOT,
    epoch_lines,
    epochs_logged,
    fills_of,
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
    """Simulate 2 tiny scans here, then `sbatch preprocess` (no arguments: it reads the data
    folder), `sbatch fills` and `sbatch train` after them, with the templates' own CPU and GPU
    defaults."""
    base = tmp_path_factory.mktemp("pipeline")
    subprocess.run(["badblock", "simulate", "--scans", "2", "--counts", "2e5", "-o",
                    str(base / "sim")], env=slurm, check=True, capture_output=True, timeout=300)
    out = base / "out"
    env = slurm_env(BADBLOCK_RUNTIME="host", BADBLOCK_DATA=str(base / "sim"),
                    BADBLOCK_OUTPUT=str(out))
    common = ["--time=10", f"--output={base}/%x-%j.batch.log"]
    pre = sbatch(env, *common, str(ROOT / "slurm/preprocess.sbatch"), cwd=base)
    fills = sbatch(env, *common, f"--dependency=afterok:{pre}", str(ROOT / "slurm/fills.sbatch"),
                   "--draws", "1", cwd=base)
    train = sbatch(env, *common, f"--dependency=afterok:{fills}", str(ROOT / "slurm/train.sbatch"),
                   "--epochs", "2", *TINY, cwd=base)
    return {"base": base, "out": out, "env": env, "pre": pre, "fills": fills, "train": train,
            "states": (wait_job(env, pre), wait_job(env, fills), wait_job(env, train))}


def stage_log(out: Path, stage: str, job: str) -> str:
    """What the stage wrote to stderr, over every run of the job (srun --open-mode=append)."""
    return (out / "logs" / f"badblock-{stage}-{job}.err").read_text()


def test_preprocess_fills_then_train_complete(pipeline):
    out = pipeline["out"]
    pre_state, fills_state, train_state = pipeline["states"]
    assert pre_state == ("COMPLETED", "0:0"), stage_log(out, "preprocess", pipeline["pre"])
    assert fills_state == ("COMPLETED", "0:0"), stage_log(out, "fills", pipeline["fills"])
    assert train_state == ("COMPLETED", "0:0")
    assert (out / "store" / "manifest.json").exists() and (out / "fills" / "fills.json").exists()
    run = out / "train"
    for name in ["checkpoint_latest.pt", "checkpoint_final.pt", "train_loss.txt",
                 "test_loss.txt", "log.jsonl", "config.resolved.yaml"]:
        assert (run / name).exists(), name
    train_log = stage_log(out, "train", pipeline["train"])
    assert [e for e, _ in epoch_lines(train_log)] == [1, 2]
    assert "finished:" in train_log


def test_templates_find_the_checkout_and_its_python(pipeline, tmp_path):
    """Submitted from the checkout with neither BADBLOCK_REPO nor BADBLOCK_PYTHON set, and no
    badblock on PATH: the job finds slurm/common.sh and .venv/bin/python itself."""
    venv_python = ROOT / ".venv" / "bin" / "python"
    if Path(sys.executable).parent != venv_python.parent:
        pytest.skip(f"the tests do not run from {venv_python}: nothing for the job to find")
    env = slurm_env(locate=False, BADBLOCK_RUNTIME="host", BADBLOCK_OUTPUT=str(tmp_path),
                    BADBLOCK_DATA=str(pipeline["base"] / "sim"))
    assert subprocess.run(["bash", "-c", "command -v badblock"], env=env).returncode != 0
    batch_log = tmp_path / "batch.log"
    job = sbatch(env, "--time=10", f"--output={batch_log}", "slurm/train.sbatch", "--epochs", "1",
                 *TINY, "--set", f"data.store={pipeline['out'] / 'store'}", "--set",
                 f"data.fills={pipeline['out'] / 'fills'}", cwd=ROOT)
    assert wait_job(env, job) == ("COMPLETED", "0:0"), batch_log.read_text()
    assert f"python: {venv_python}" in batch_log.read_text()
    assert [e for e, _ in epoch_lines(stage_log(tmp_path, "train", job))] == [1]


def test_repair_template_repairs_a_scan(pipeline, tmp_path):
    env = slurm_env(BADBLOCK_RUNTIME="host", BADBLOCK_OUTPUT=str(tmp_path),
                    BADBLOCK_DATA=str(pipeline["base"] / "sim"))
    scan = pipeline["base"] / "sim" / "scan_001.hs"
    batch_log = tmp_path / "batch.log"
    job = sbatch(env, "--time=10", f"--output={batch_log}", str(ROOT / "slurm/repair.sbatch"),
                 "--checkpoint", str(pipeline["out"] / "train" / "checkpoint_final.pt"),
                 "--scanner", "mini", "--dead-blocks", "5:1", "--no-mask-check", str(scan),
                 "-o", str(tmp_path / "repaired/"), cwd=tmp_path)  # a complete scan: no check
    assert wait_job(env, job) == ("COMPLETED", "0:0"), batch_log.read_text()
    repaired = tmp_path / "repaired" / "scan_001.s"
    damaged = scan.with_suffix(".s")
    assert repaired.stat().st_size == damaged.stat().st_size
    assert repaired.read_bytes() != damaged.read_bytes()
    assert (tmp_path / "repaired" / "repair_summary.json").exists()


def test_repair_without_scans_fails_at_once_with_one_line(slurm, tmp_path):
    env = slurm_env(BADBLOCK_RUNTIME="host", BADBLOCK_OUTPUT=str(tmp_path))
    batch_log = tmp_path / "batch.log"
    job = sbatch(env, f"--output={batch_log}", str(ROOT / "slurm/repair.sbatch"), cwd=tmp_path)
    assert wait_job(env, job) == ("FAILED", "2:0")
    [line] = [ln for ln in batch_log.read_text().splitlines() if "error" in ln]
    assert "no scans to repair" in line
    assert not (tmp_path / "logs" / f"badblock-repair-{job}.err").exists()  # no step ran


def test_two_task_ddp_training(pipeline, tmp_path):
    env = slurm_env(BADBLOCK_RUNTIME="host", BADBLOCK_OUTPUT=str(tmp_path))
    store = pipeline["out"] / "store"
    job = sbatch(env, "--ntasks-per-node=2", "--time=10", f"--output={tmp_path}/batch.log",
                 str(ROOT / "slurm/train.sbatch"), "--epochs", "1", *TINY, "--set",
                 f"data.store={store}", "--set", f"data.fills={store.parent / 'fills'}",
                 cwd=tmp_path)
    assert wait_job(env, job) == ("COMPLETED", "0:0"), (tmp_path / "batch.log").read_text()
    err = stage_log(tmp_path, "train", job)
    assert "2 process(es)" in err
    assert err.count("finished:") == 1  # only rank 0 reports and writes
    assert [e for e, _ in epoch_lines(err)] == [1]


def submit_preemptible(tmp_path: Path, store: Path, *flags: str) -> tuple[dict, str, Path]:
    env = slurm_env(BADBLOCK_RUNTIME="host", BADBLOCK_OUTPUT=str(tmp_path))
    batch_log = tmp_path / "batch.log"
    job = sbatch(env, "--cpus-per-task=1", f"--output={batch_log}", *flags,
                 str(ROOT / "slurm/train.sbatch"), *PREEMPT_ARGS, "--set", f"data.store={store}",
                 "--set", fills_of(store), cwd=tmp_path)
    return env, job, batch_log


def check_resumed_like_the_reference(tmp_path: Path, job: str, batch_log: Path,
                                     reference: list) -> None:
    """Every epoch once, with the numbers of the uninterrupted run; the job was requeued."""
    log = batch_log.read_text()
    assert "caught SIGUSR2" in log and "requeueing job" in log and "restart 1" in log, log
    err = stage_log(tmp_path, "train", job)
    assert "USR2 received: saved" in err and "resuming epoch" in err and "finished:" in err
    assert epoch_lines(err) == reference
    assert (tmp_path / "train" / "checkpoint_final.pt").exists()


def test_preempted_training_requeues_and_resumes(tiny_store, reference_epochs, slurm, tmp_path):
    """`scancel -b -s USR2`, what --signal=B:USR2@300 does before the limit: the batch shell
    forwards it, the trainer saves, the shell requeues, the next run resumes."""
    env, job, batch_log = submit_preemptible(tmp_path, tiny_store, "--time=10")
    end = time.monotonic() + 180
    while not epochs_logged(tmp_path / "train"):  # training is under way
        assert time.monotonic() < end and in_queue(env, job), batch_log.read_text()
        time.sleep(0.3)
    subprocess.run(["scancel", "-b", "-s", "USR2", job], env=env, check=True, timeout=60)
    end = time.monotonic() + 60
    while int(scontrol_job(env, job).get("Restarts", "0")) < 1:
        assert time.monotonic() < end, batch_log.read_text()
        time.sleep(0.3)
    # The requeued job starts again after AuthInfo=cred_expire (10 s on the local cluster);
    # forcing StartTime=now this early gets it killed ("Job credential revoked").
    assert wait_job(env, job, timeout=400) == ("COMPLETED", "0:0"), batch_log.read_text()
    check_resumed_like_the_reference(tmp_path, job, batch_log, reference_epochs)


def test_time_limit_signal_preempts_and_the_job_finishes(slurm, time_limit_run):
    """A one-minute job: Slurm itself sends USR2 before the limit (--signal=B:USR2@15, up to a
    minute early by Slurm's own account), and the job requeues until the training is done (the
    job was submitted before the first cluster test: conftest.time_limit_run)."""
    env, job, batch_log = (time_limit_run[k] for k in ("env", "job", "batch_log"))
    assert wait_job(env, job, timeout=600) == ("COMPLETED", "0:0"), batch_log.read_text()
    assert int(scontrol_job(env, job).get("Restarts", "0")) >= 1
    check_resumed_like_the_reference(time_limit_run["base"], job, batch_log,
                                     time_limit_run["reference"]())


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
    job = sbatch(env, f"--output={tmp_path}/batch.log", str(ROOT / "slurm/preprocess.sbatch"),
                 str(tmp_path / "no-such-scans"), cwd=tmp_path)
    state, code = wait_job(env, job)
    assert state == "FAILED" and code == "2:0"
    assert "no-such-scans" in stage_log(tmp_path, "preprocess", job)
    assert job_state(env, job)[0] == "FAILED"
