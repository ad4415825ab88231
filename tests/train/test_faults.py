"""Training under faults: two runs on one folder, a run killed with SIGKILL, a full disk, a
run that fails before its first checkpoint. Real ``badblock train`` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from badblock.utils.checkpoint import load_checkpoint
from tests.train.trainer_store import make_store, overrides

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BADBLOCK_", "SLURM_"))}
    env.update(BADBLOCK_PROGRESS="0", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return env


def _train(out: Path, **sets) -> list[str]:
    return [sys.executable, "-m", "badblock", "train", *overrides(out, **sets)]


def _run_folder(tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    out.mkdir()
    (out / "store").symlink_to(tmp_path / "store")
    return out


def _wait_for(path: Path, proc, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear in time")


def test_second_run_on_a_folder_is_refused_and_a_killed_one_blocks_nothing(tmp_path):
    make_store(tmp_path / "store")
    out = _run_folder(tmp_path, "run")
    run = out / "train"
    first = subprocess.Popen(_train(out, **{"train.epochs": 400}), cwd=ROOT, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(run / "checkpoint_latest.pt", first)
        config_before = (run / "config.resolved.yaml").read_text()
        second = subprocess.run(_train(out, **{"train.epochs": 3, "optim.lr": 0.5}), cwd=ROOT,
                                env=_env(), capture_output=True, text=True, timeout=180)
        assert second.returncode == 2, second.stderr
        assert second.stderr.count("\n") == 1, second.stderr
        assert "another badblock train is running in this folder" in second.stderr
        assert str(first.pid) in second.stderr
        assert first.poll() is None  # the first one goes on, its description untouched
        assert (run / "config.resolved.yaml").read_text() == config_before
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL
    step = load_checkpoint(run / "checkpoint_latest.pt")["step"]
    # the killed run's lock died with it: the next run resumes at once
    third = subprocess.run(_train(out, **{"train.epochs": 400, "train.max_steps": step + 2}),
                           cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    assert "resuming" in third.stderr
    assert load_checkpoint(run / "checkpoint_final.pt")["step"] == step + 2
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_full_disk_during_training_is_one_line_and_leaves_nothing(tmp_path, small_disk):
    make_store(tmp_path / "store")
    disk = small_disk(48)  # room for the config and the loss files, not for a checkpoint
    (disk / "store").symlink_to(tmp_path / "store")
    res = subprocess.run(_train(disk, **{"train.epochs": 1}), cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "No space left on device" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    # a failed first run leaves no run folder, no config describing it, no temporaries
    assert sorted(p.name for p in disk.iterdir()) == ["store"]


def test_a_run_failing_before_its_first_checkpoint_leaves_no_config(tmp_path):
    make_store(tmp_path / "store")
    out = _run_folder(tmp_path, "nan")
    # a learning rate this large sends the loss to inf within a few steps
    res = subprocess.run(_train(out, **{"train.epochs": 3, "optim.lr": 1e30,
                                        "train.grad_clip": 0}),
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr
    assert "loss became" in res.stderr and "no checkpoint was written yet" in res.stderr
    assert not (out / "train").exists()
