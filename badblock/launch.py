"""Submit a badblock stage to Slurm with submitit, or run it locally.

Every task of the job runs :class:`StageJob`: it sets up torch.distributed's environment and runs
``python -m badblock STAGE --config <resolved config>`` as a child process. The child, not the
submitit process, is the stage, because the trainer installs its own SIGUSR2/SIGTERM handlers and
in the same process they would replace submitit's.

Preemption and time limits: Slurm sends USR2 ``launch.signal_delay_s`` before the limit (submitit's
choice: NCCL takes USR1). submitit's handler on rank 0 calls :meth:`StageJob.checkpoint`, which
makes sure the stage got the signal, waits until it has saved ``checkpoint_latest.pt`` and
exited, and returns a fresh :class:`StageJob` for the same command; submitit pickles that (a few
strings, never the model) and requeues the job. The requeued stage resumes from
``checkpoint_latest.pt`` in its run folder by itself. The trainer's own ``scontrol requeue`` is
switched off here (``train.requeue=false``) since submitit does the requeueing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from badblock.cli import COMMANDS
from badblock.config import Config, save_resolved
from badblock.config.cluster import LaunchConfig
from badblock.errors import BadInputError

# Every command but launch itself (a stage added to the CLI can be launched at once).
STAGES = tuple(c for c in COMMANDS if c != "launch")
DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
# How long checkpoint() waits for the stage to save and exit after USR2, seconds. The signal
# comes launch.signal_delay_s (default 90 s) before the limit; one training step must fit.
CHECKPOINT_WAIT_S = 600.0
# After SIGTERM ended the stage early, how long to wait for submitit's USR2 (preemption) before
# reporting the job as interrupted; Slurm's SIGKILL usually comes first.
TERM_GRACE_S = 120.0


class StageFailed(RuntimeError):
    """The stage's process ended with an error (its own message is in the task's log)."""


def tasks_per_node(lc: LaunchConfig) -> int:
    """One task per GPU (each picks ``cuda:LOCAL_RANK``), or ``launch.tasks_per_node``."""
    return lc.tasks_per_node or max(lc.gpus_per_node, 1)


def check_launch_config(lc: LaunchConfig) -> None:
    for key in ("nodes", "time_min", "cpus_per_task"):
        if getattr(lc, key) < 1:
            raise BadInputError(f"launch.{key}", f"must be at least 1, not {getattr(lc, key)}")
    for key in ("gpus_per_node", "tasks_per_node", "signal_delay_s", "max_requeue"):
        if getattr(lc, key) < 0:
            raise BadInputError(f"launch.{key}", f"must not be negative ({getattr(lc, key)})")
    if lc.cluster != "slurm" and lc.nodes != 1:
        raise BadInputError("launch.nodes", f"cluster '{lc.cluster}' runs on this machine only: "
                                            f"use nodes=1 or cluster=slurm")
    if lc.cluster == "debug" and tasks_per_node(lc) != 1:
        raise BadInputError("launch.tasks_per_node", "cluster 'debug' runs one task in this "
                                                     "process: use local or slurm for several")
    if lc.signal_delay_s >= lc.time_min * 60:
        raise BadInputError("launch.signal_delay_s", f"{lc.signal_delay_s} s is not inside the "
                                                     f"time limit of {lc.time_min} min")
    for mount in lc.container_mounts:
        if ":" not in mount:
            raise BadInputError("launch.container_mounts", f"'{mount}' is not SRC:DST[:FLAGS]")


def container_srun_args(cfg: Config) -> list[str]:
    """pyxis options: the image, and mounts that put run.output and run.data (read-only) at
    the same paths inside, so that the resolved config and submitit's files stay valid."""
    lc = cfg.launch
    if not lc.container_image:
        return []
    mounts = list(lc.container_mounts)
    output = str(Path(cfg.run.output).resolve())
    data = str(Path(cfg.run.data).resolve())
    mounts.append(f"{output}:{output}")
    if data != output:
        mounts.append(f"{data}:{data}:ro")
    return [f"--container-image={lc.container_image}", f"--container-mounts={','.join(mounts)}",
            f"--container-workdir={output}"]


def executor_parameters(cfg: Config, stage: str) -> dict:
    """``AutoExecutor.update_parameters`` arguments from ``cfg.launch``."""
    lc = cfg.launch
    params: dict = {
        "name": lc.job_name or f"badblock-{stage}",
        "timeout_min": lc.time_min,
        "nodes": lc.nodes,
        "tasks_per_node": tasks_per_node(lc),
        "cpus_per_task": lc.cpus_per_task,
        "gpus_per_node": lc.gpus_per_node,
    }
    if lc.mem_gb > 0:
        params["mem_gb"] = lc.mem_gb
    if lc.cluster == "slurm":
        params["slurm_signal_delay_s"] = lc.signal_delay_s
        if lc.partition:
            params["slurm_partition"] = lc.partition
        srun = container_srun_args(cfg) + list(lc.srun_args)
        if srun:
            params["slurm_srun_args"] = srun
        if lc.setup:
            params["slurm_setup"] = list(lc.setup)
    elif lc.cluster == "local" and lc.setup:
        # (AutoExecutor does not pass a signal delay to the local executor: it uses 30 s.)
        params["local_setup"] = list(lc.setup)
    return params


def export_distributed_env(job_env=None) -> dict[str, str]:
    """Put torch.distributed's variables (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK) for
    this submitit task into ``os.environ``; a single task needs none. Returns what is set.

    ``TorchDistributedEnvironment().export()`` raises when they are set already, which an
    enroot/pyxis hook does inside NGC containers: values that agree with the job are kept, and
    leftovers that do not (an outer job's) are replaced. The devices are chosen by local rank,
    so CUDA_VISIBLE_DEVICES is left alone (narrowing it per task would hide NVLink peers).
    ``job_env`` stands in for ``TorchDistributedEnvironment()`` (tests).
    """
    if job_env is None:
        from submitit.helpers import TorchDistributedEnvironment

        job_env = TorchDistributedEnvironment()
    if job_env.world_size <= 1:
        return {}
    try:
        job_env.export(set_cuda_visible_devices=False)
    except RuntimeError as exc:
        mine = {"RANK": str(job_env.rank), "WORLD_SIZE": str(job_env.world_size),
                "LOCAL_RANK": str(job_env.local_rank)}
        agree = all(os.environ.get(k) == v for k, v in mine.items())
        if not (agree and os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
            _log(f"{exc}; replacing values that do not match this task")
            job_env.export(set_cuda_visible_devices=False, overwrite=True)
    return {k: os.environ[k] for k in DIST_VARS if k in os.environ}


def _log(text: str) -> None:
    print(f"badblock launch: {text}", file=sys.stderr, flush=True)


class StageJob:
    """What submitit runs on every task: ``badblock STAGE ARGV`` in a child process.

    Picklable and small: the stage, its arguments, extra environment and the attempt number.
    """

    def __init__(self, stage: str, argv: list[str], env: dict[str, str] | None = None,
                 attempt: int = 0, run_folder: str | None = None):
        self.stage = stage
        self.argv = list(argv)
        self.env = dict(env or {})
        self.attempt = attempt
        self.run_folder = run_folder  # train: where checkpoint_latest.pt is written
        self._proc: subprocess.Popen | None = None
        self._signals: list[str] = []

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_proc"] = None
        state["_signals"] = []
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "badblock", self.stage, *self.argv]

    def __call__(self) -> dict:
        # Inside a submitit task (its own process); the debug executor runs in the caller's.
        dist = export_distributed_env() if "SUBMITIT_EXECUTOR" in os.environ else {}
        env = dict(os.environ)
        env.update(self.env)
        rank = int(env.get("RANK", "0"))
        restore = self._watch_signals()
        try:
            return self._run(env, rank, dist)
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)

    def _run(self, env: dict, rank: int, dist: dict) -> dict:
        where = f" (rank {rank} of {dist['WORLD_SIZE']})" if dist else ""
        _log(f"attempt {self.attempt}{where}: {' '.join(self.command())}")
        self._proc = subprocess.Popen(self.command(), env=env)
        # A poll loop, not Popen.wait(): checkpoint() runs inside a signal handler on this very
        # thread and must be able to poll the same process without Popen's wait lock.
        while (rc := self._proc.poll()) is None:
            time.sleep(0.2)
        if rc == 0 and self._signals:
            # The stage stopped early for a signal (it saved what it had). On preemption and
            # near the time limit USR2 comes (after TERM, when Slurm preempts): on rank 0
            # submitit's handler then requeues the job and exits this process; other ranks
            # just end. With TERM alone the job is being cancelled: Slurm's SIGKILL ends the wait.
            deadline = time.monotonic() + TERM_GRACE_S
            while "SIGUSR2" not in self._signals and time.monotonic() < deadline:
                time.sleep(0.2)
            if "SIGUSR2" in self._signals and rank != 0:
                return {"stage": self.stage, "rank": rank, "attempt": self.attempt,
                        "returncode": rc, "interrupted": True}
            raise StageFailed(f"badblock {self.stage} stopped by {', '.join(self._signals)} "
                              f"before it finished, and the job was not requeued")
        if rc != 0:
            raise StageFailed(f"badblock {self.stage} exited with code {rc} "
                              f"(its error is in this task's log)")
        return {"stage": self.stage, "rank": rank, "attempt": self.attempt, "returncode": 0,
                "interrupted": False}

    def _watch_signals(self) -> dict:
        """Note USR2/TERM (and pass TERM on to the stage) while keeping submitit's handlers;
        returns the handlers to put back."""
        restore: dict = {}
        if threading.current_thread() is not threading.main_thread():
            return restore
        for sig in (signal.SIGUSR2, signal.SIGTERM):
            old = restore[sig] = signal.getsignal(sig)

            def handler(signum, frame, old=old):
                name = signal.Signals(signum).name
                if name not in self._signals:
                    self._signals.append(name)
                if signum == signal.SIGTERM and self._proc is not None and \
                        self._proc.poll() is None:
                    self._proc.send_signal(signum)
                if callable(old):
                    old(signum, frame)

            signal.signal(sig, handler)
        return restore

    def checkpoint(self, *args, **kwargs):
        """Called by submitit (rank 0) on USR2: let the stage save and stop, then hand back the
        same command as a new job; the stage resumes from its own checkpoint."""
        from submitit.helpers import DelayedSubmission

        proc = self._proc
        if proc is not None and proc.poll() is None:
            # Slurm signals every process of the step, but the local executor only this one.
            proc.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + CHECKPOINT_WAIT_S
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if proc.poll() is None:
                _log(f"the stage did not stop within {CHECKPOINT_WAIT_S:.0f} s of USR2")
        latest = Path(self.run_folder) / "checkpoint_latest.pt" if self.run_folder else None
        if latest is not None:
            _log(f"requeueing; resumes from {latest}" if latest.exists() else
                 f"requeueing; no {latest} yet, the stage starts again")
        else:
            _log("requeueing; the stage starts again")
        return DelayedSubmission(StageJob(self.stage, self.argv, self.env, self.attempt + 1,
                                          self.run_folder))


def prepare(cfg: Config, stage: str, stage_args: list[str] | None = None,
            now: datetime | None = None) -> tuple[StageJob, Path]:
    """Resolve paths, write the config the job will run with, and build its :class:`StageJob`.

    Returns the job and its launch folder ``run.output/launch.folder/<stage>-<UTC time>``.
    """
    if stage not in STAGES:
        raise BadInputError("stage", f"'{stage}' cannot be launched (stages: {', '.join(STAGES)})")
    check_launch_config(cfg.launch)
    # Jobs may start in another folder: every path they are given is absolute.
    run = replace(cfg.run, output=str(Path(cfg.run.output).resolve()),
                  data=str(Path(cfg.run.data).resolve()))
    cfg = replace(cfg, run=run)
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    folder = cfg.output_path(cfg.launch.folder).resolve() / f"{stage}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    config_file = save_resolved(cfg, folder)
    env = {"BADBLOCK_PROGRESS": "0", "BADBLOCK_TRAIN__REQUEUE": "false",
           "PYTHONUNBUFFERED": "1"}
    run_folder = str(cfg.output_path(cfg.train.run)) if stage == "train" else None
    argv = ["--config", str(config_file), *(stage_args or [])]
    return StageJob(stage, argv, env, run_folder=run_folder), folder


def make_executor(cfg: Config, stage: str, folder: Path):
    """submitit's AutoExecutor with the cluster named explicitly and the config's parameters."""
    import submitit

    lc = cfg.launch
    kwargs = {}
    if lc.cluster == "slurm":
        kwargs["slurm_max_num_timeout"] = lc.max_requeue
        python = lc.python or ("python" if lc.container_image else None)
        if python:
            kwargs["slurm_python"] = python
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=lc.cluster, **kwargs)
    executor.update_parameters(**executor_parameters(cfg, stage))
    return executor


def submit(cfg: Config, stage: str, stage_args: list[str] | None = None):
    """Submit ``badblock STAGE`` as configured in ``cfg.launch``; returns the submitit job."""
    job_fn, folder = prepare(cfg, stage, stage_args)
    executor = make_executor(cfg, stage, folder)
    return executor.submit(job_fn)


__all__ = ["STAGES", "StageJob", "StageFailed", "check_launch_config", "container_srun_args",
           "executor_parameters", "export_distributed_env", "make_executor", "prepare",
           "submit", "tasks_per_node"]
