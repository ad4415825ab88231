"""badblock launch (submitit): parameters from the config, the distributed environment, and real
runs on the debug and local executors and on the project's local Slurm cluster, including a
requeue through StageJob.checkpoint()."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from badblock.config import load_config
from badblock.errors import BadInputError
from badblock.launch import (
    STAGES,
    StageFailed,
    StageJob,
    check_launch_config,
    executor_parameters,
    export_distributed_env,
    prepare,
    submit,
)
from tests.cluster.conftest import (
    PREEMPT_ARGS,
    ROOT,
    epoch_lines,
    epochs_logged,
    fills_of,
    scontrol_job,
    wait_job,
)


def test_parameters_come_from_the_config(tmp_path):
    cfg = load_config(None, ["launch.nodes=2", "launch.gpus_per_node=8", "launch.partition=batch",
                             "launch.time_min=240", "launch.signal_delay_s=120",
                             "launch.container_image=/images/badblock.sqsh",
                             f"run.output={tmp_path}/out", f"run.data={tmp_path}/data",
                             "launch.srun_args=[--mpi=none]"])
    p = executor_parameters(cfg, "train")
    assert p["nodes"] == 2 and p["gpus_per_node"] == 8 and p["tasks_per_node"] == 8
    assert p["timeout_min"] == 240 and p["slurm_signal_delay_s"] == 120
    assert p["slurm_partition"] == "batch" and p["name"] == "badblock-train"
    assert p["slurm_srun_args"] == [
        "--container-image=/images/badblock.sqsh",
        f"--container-mounts={tmp_path}/out:{tmp_path}/out,{tmp_path}/data:{tmp_path}/data:ro",
        f"--container-workdir={tmp_path}/out", "--mpi=none"]
    assert "--gpus-per-task" not in json.dumps(p)
    cpu = executor_parameters(load_config(None, ["launch.tasks_per_node=2"]), "preprocess")
    assert cpu["tasks_per_node"] == 2 and cpu["gpus_per_node"] == 0
    assert "slurm_srun_args" not in cpu


@pytest.mark.parametrize("override, key", [
    (["launch.cluster=local", "launch.nodes=2"], "launch.nodes"),
    (["launch.cluster=debug", "launch.gpus_per_node=2"], "launch.tasks_per_node"),
    (["launch.time_min=1", "launch.signal_delay_s=90"], "launch.signal_delay_s"),
    (["launch.container_mounts=[/raid]"], "launch.container_mounts"),
    (["launch.nodes=0"], "launch.nodes"),
])
def test_bad_launch_settings_are_refused(override, key):
    with pytest.raises(BadInputError) as err:
        check_launch_config(load_config(None, override).launch)
    assert err.value.message.startswith(key)


def test_prepare_writes_the_resolved_config_and_a_small_job(tmp_path):
    cfg = load_config("demo", [f"run.output={tmp_path}", "train.epochs=7"])
    job, folder = prepare(cfg, "train", ["--epochs", "3"])
    resolved = load_config(folder / "config.resolved.yaml")
    assert resolved.train.epochs == 7 and resolved.run.output == str(tmp_path)
    assert job.argv == ["--config", str(folder / "config.resolved.yaml"), "--epochs", "3"]
    assert job.env["BADBLOCK_TRAIN__REQUEUE"] == "false"  # submitit requeues, not the trainer
    assert job.run_folder == str(tmp_path / "train")
    # What submitit pickles on requeue: the command, never a model.
    assert len(pickle.dumps(job.checkpoint().function)) < 2000
    with pytest.raises(BadInputError):
        prepare(cfg, "launch")


class FakeJobEnv:
    """Stands in for submitit's TorchDistributedEnvironment: the same export() semantics."""

    def __init__(self, rank=1, world_size=2, local_rank=1):
        self.master_addr, self.master_port = "node1", 23456
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.local_world_size = world_size

    def export(self, set_cuda_visible_devices=True, overwrite=False):
        values = {"MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port),
                  "RANK": str(self.rank), "WORLD_SIZE": str(self.world_size),
                  "LOCAL_RANK": str(self.local_rank),
                  "LOCAL_WORLD_SIZE": str(self.local_world_size)}
        if not overwrite:
            for key in values:
                if key in os.environ:
                    raise RuntimeError(f"Cannot export environment variables as {key} is "
                                       f"already set")
        os.environ.update(values)
        return self


@pytest.fixture
def scratch_environ(monkeypatch):
    """os.environ as a throw-away copy: export() writes into it directly."""
    monkeypatch.setattr(os, "environ", dict(os.environ))
    for key in ["MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                "LOCAL_WORLD_SIZE", "CUDA_VISIBLE_DEVICES"]:
        os.environ.pop(key, None)


def test_distributed_env_export_and_preset_variables(scratch_environ):
    assert export_distributed_env(FakeJobEnv(rank=0, world_size=1)) == {}
    assert "RANK" not in os.environ
    got = export_distributed_env(FakeJobEnv())
    assert got["RANK"] == "1" and got["MASTER_ADDR"] == "node1" and got["WORLD_SIZE"] == "2"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # devices by local rank, all visible
    # An enroot hook set them already, consistently: kept, including its own port.
    os.environ["MASTER_PORT"] = "29500"
    got = export_distributed_env(FakeJobEnv())
    assert got["MASTER_PORT"] == "29500"
    # Leftovers of another job that disagree with this task: replaced.
    os.environ["RANK"] = "5"
    got = export_distributed_env(FakeJobEnv())
    assert got["RANK"] == "1" and got["MASTER_PORT"] == "23456"


def test_real_torch_distributed_environment_under_local_submitit(scratch_environ):
    """submitit's own TorchDistributedEnvironment, fed the local executor's variables."""
    env = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "4242",
           "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_GLOBALID": "1",
           "SUBMITIT_LOCAL_LOCALID": "1", "SUBMITIT_LOCAL_NODEID": "0",
           "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "RANK": "1", "WORLD_SIZE": "2",
           "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29400"}
    os.environ.update(env)
    got = export_distributed_env()  # export() raises inside: the hook's values are kept
    assert got["MASTER_PORT"] == "29400" and got["RANK"] == "1"


def test_debug_cluster_runs_the_stage(tmp_path):
    cfg = load_config(None, [f"run.output={tmp_path}", "launch.cluster=debug"])
    job = submit(cfg, "mask", ["--scanner", "mini", "-o", str(tmp_path / "m.npy")])
    assert job.result()["returncode"] == 0
    assert (tmp_path / "m.npy").exists()


def test_a_failing_stage_fails_the_task(tmp_path, capfd):
    job = StageJob("mask", ["--scanner", "nosuch", "-o", str(tmp_path / "m.npy")])
    with pytest.raises(StageFailed, match="badblock mask exited with code 2"):
        job()
    assert "unknown scanner 'nosuch'" in capfd.readouterr().err
    assert not (tmp_path / "m.npy").exists()


def _task_pid(folder: Path) -> int:
    """The submitit task process of a local job launched into ``folder``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in cmd and any(str(folder).encode() in c for c in cmd):
            return int(proc.name)
    return 0


@pytest.mark.slow
def test_local_cluster_requeues_through_checkpoint(tiny_store, reference_epochs, tmp_path):
    """A real USR2 to the local task: checkpoint() lets the trainer save, submitit requeues,
    the stage resumes; every epoch once, with the numbers of an uninterrupted run."""
    cfg = load_config("demo", [f"run.output={tmp_path}", "launch.cluster=local",
                               f"data.store={tiny_store}", fills_of(tiny_store)])
    job = submit(cfg, "train", PREEMPT_ARGS)
    run = tmp_path / "train"
    end = time.monotonic() + 180
    while not epochs_logged(run):
        assert time.monotonic() < end and not job.done(), job.stderr()
        time.sleep(0.3)
    pid = _task_pid(tmp_path / "launch")
    assert pid, "no submitit task process found"
    os.kill(pid, signal.SIGUSR2)
    result = job.result()
    assert result["attempt"] == 1 and result["returncode"] == 0
    err = job.stderr()
    assert "requeueing; resumes from" in err and "resuming epoch" in err
    assert epoch_lines(err) == reference_epochs


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_launch_job_preempted_by_scancel_usr2(slurm, tiny_store, reference_epochs,
                                                     tmp_path, monkeypatch):
    """`scancel -s USR2 JOB`, the way to preempt a `badblock launch` job by hand (USR2 to the
    job's tasks, as Slurm's --signal=USR2@90 does; not -b, which would kill submitit's batch
    shell): checkpoint(), scontrol requeue, resume; every epoch once, as uninterrupted."""
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    cfg = load_config("demo", [f"run.output={tmp_path}", "launch.cluster=slurm",
                               "launch.partition=debug", "launch.cpus_per_task=1",
                               "launch.time_min=30", f"data.store={tiny_store}",
                               fills_of(tiny_store)])
    job = submit(cfg, "train", PREEMPT_ARGS)
    run = tmp_path / "train"
    end = time.monotonic() + 180
    while not epochs_logged(run):
        assert time.monotonic() < end and not job.done(), (job.state, job.stderr())
        time.sleep(0.5)
    subprocess.run(["scancel", "-s", "USR2", job.job_id], env=slurm, check=True, timeout=60)
    end = time.monotonic() + 60
    while int(scontrol_job(slurm, job.job_id).get("Restarts", "0")) < 1:
        assert time.monotonic() < end, job.stderr()
        time.sleep(0.3)
    # sacct first: submitit's own polling backs off to minutes for older jobs.
    assert wait_job(slurm, job.job_id, timeout=400) == ("COMPLETED", "0:0")
    [result] = job.results()
    assert result["attempt"] == 1 and result["returncode"] == 0
    err = job.stderr()
    assert "requeueing; resumes from" in err
    assert epoch_lines(err) == reference_epochs


def test_launch_command_dry_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "badblock", "launch", "train", "--dry-run",
                           "--nodes", "2", "--gpus-per-node", "4", "--partition", "p",
                           "--time", "30", "--args", "--epochs 3"], capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["cluster"] == "slurm"
    assert plan["parameters"]["tasks_per_node"] == 4 and plan["parameters"]["timeout_min"] == 30
    assert plan["command"][-2:] == ["--epochs", "3"]
    assert not (tmp_path / "badblock-output").exists()  # nothing submitted, nothing written


def test_every_stage_of_the_cli_can_be_launched(tmp_path):
    """detect was missing from launch's own copy of the stage list."""
    from badblock.cli import COMMANDS

    assert sorted(STAGES) == sorted(set(COMMANDS) - {"launch"}) and "detect" in STAGES
    proc = subprocess.run([sys.executable, "-m", "badblock", "launch", "detect", "--dry-run",
                           "--args", "scan.hs --scanner mini"], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    command = json.loads(proc.stdout)["command"]
    assert command[3] == "detect" and command[-3:] == ["scan.hs", "--scanner", "mini"], command


@pytest.mark.slurm
def test_launch_command_on_slurm_with_a_gpu(slurm, tmp_path):
    """The CLI end to end on the real local Slurm (fake GPU gres): submit, wait, result."""
    proc = subprocess.run(
        [sys.executable, "-m", "badblock", "launch", "mask", "--partition", "debug",
         "--gpus-per-node", "1", "--cpus-per-task", "1", "--time", "5", "-o", str(tmp_path),
         "--wait", "--args", f"--scanner mini -o {tmp_path}/m.npy"],
        env=slurm, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '"returncode": 0' in proc.stdout and (tmp_path / "m.npy").exists()
    [script] = (tmp_path / "launch").glob("mask-*/*/*_submission.sh")
    text = script.read_text()
    assert "#SBATCH --gpus-per-node=1" in text and "#SBATCH --signal=USR2@90" in text
    assert "#SBATCH --partition=debug" in text and "#SBATCH --time=5" in text


def test_launch_help_names_the_preemption_command():
    """Preempting a launch job by hand takes `scancel -s USR2` (the tasks), not the templates'
    `scancel -b -s USR2` (the batch shell), which submitit's batch shell does not survive."""
    proc = subprocess.run([sys.executable, "-m", "badblock", "launch", "--help"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 0
    assert "scancel -s USR2 JOBID" in proc.stdout and "not scancel -b" in proc.stdout
    docs = (ROOT / "docs" / "containers.md").read_text()
    assert "scancel -s USR2" in docs and "scancel -b -s USR2" in docs
