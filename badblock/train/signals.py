"""Preemption: SIGUSR2 / SIGTERM ask the trainer to stop after the current step.

Slurm sends a signal some time before a job's limit (``--signal=USR2@90``) and on preemption;
submitit uses USR2 because NCCL takes USR1. The handler only sets a flag: the loop finishes its
step, saves ``checkpoint_latest.pt``, requeues the job under Slurm and exits 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading

PREEMPT_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class PreemptionHandler:
    """Context manager that records SIGUSR2 / SIGTERM instead of dying on them."""

    def __init__(self, signals=PREEMPT_SIGNALS):
        self.signals = tuple(signals)
        self.received: int | None = None
        self._old: dict = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def _handle(self, signum, frame):  # the signal module's handler signature
        self.received = signum

    def __enter__(self) -> PreemptionHandler:
        # Signal handlers can only be installed from the main thread; elsewhere (a test runner's
        # worker thread) the trainer simply cannot be preempted, which is harmless.
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def slurm_job_id(environ=None) -> str | None:
    environ = os.environ if environ is None else environ
    # An array task must be requeued by its own id, not the array's.
    if environ.get("SLURM_ARRAY_JOB_ID") and environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
    return environ.get("SLURM_JOB_ID") or None


def requeue_slurm(environ=None) -> bool:
    """``scontrol requeue $SLURM_JOB_ID``; True when Slurm accepted it."""
    job = slurm_job_id(environ)
    scontrol = shutil.which("scontrol")
    if not job or not scontrol:
        return False
    try:
        res = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True,
                             timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"badblock train: scontrol requeue {job} failed: {exc}", file=sys.stderr)
        return False
    if res.returncode != 0:
        print(f"badblock train: scontrol requeue {job} failed: {res.stderr.strip()}",
              file=sys.stderr)
        return False
    return True
