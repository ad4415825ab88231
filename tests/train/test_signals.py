"""Preemption: SIGUSR2 / SIGTERM are recorded, not fatal; Slurm job ids; requeue via scontrol."""

from __future__ import annotations

import os
import signal

from badblock.train.signals import PreemptionHandler, requeue_slurm, slurm_job_id


def test_signals_are_recorded_and_the_old_handlers_come_back():
    before = signal.getsignal(signal.SIGUSR2)
    with PreemptionHandler() as pre:
        assert not pre.requested and pre.signal_name == ""
        os.kill(os.getpid(), signal.SIGUSR2)
        assert pre.requested and pre.signal_name == "SIGUSR2"
        os.kill(os.getpid(), signal.SIGTERM)  # still alive: recorded too
        assert pre.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGUSR2) == before


def test_slurm_job_id_of_plain_and_array_jobs():
    assert slurm_job_id({}) is None
    assert slurm_job_id({"SLURM_JOB_ID": "77"}) == "77"
    assert slurm_job_id({"SLURM_JOB_ID": "80", "SLURM_ARRAY_JOB_ID": "70",
                         "SLURM_ARRAY_TASK_ID": "3"}) == "70_3"


def test_requeue_runs_scontrol_with_the_job_id(tmp_path, monkeypatch):
    # no Slurm here: a stand-in scontrol on PATH records what it was asked
    log = tmp_path / "calls"
    tool = tmp_path / "scontrol"
    tool.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\nexit ${{FAIL:-0}}\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert requeue_slurm({}) is False  # no job id: nothing to requeue
    assert requeue_slurm({"SLURM_JOB_ID": "12"}) is True
    monkeypatch.setenv("FAIL", "1")
    assert requeue_slurm({"SLURM_JOB_ID": "13"}) is False
    assert log.read_text().split("\n")[:2] == ["requeue 12", "requeue 13"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert requeue_slurm({"SLURM_JOB_ID": "14"}) is False  # no scontrol at all
