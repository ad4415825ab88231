"""The exact command lines slurm/*.sbatch build for each runtime (BADBLOCK_DRY_RUN=1), run
directly with bash: no Slurm needed."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cluster.conftest import ROOT


def dry_run(tmp_path: Path, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("BADBLOCK_", "SLURM_", "MASTER_", "CUDA_VISIBLE"))}
    base.update(BADBLOCK_DRY_RUN="1", BADBLOCK_OUTPUT=str(tmp_path / "out"),
                BADBLOCK_DATA=str(tmp_path / "data"), BADBLOCK_CONFIG=str(tmp_path / "my.yaml"))
    base.update(env)
    return subprocess.run(["bash", str(ROOT / "slurm" / script), *args], env=base, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def folders(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "my.yaml").write_text("train: {epochs: 2}\n")
    return tmp_path


def logs_flags(out: Path) -> list[str]:
    return ["srun", "--kill-on-bad-exit=1", "--open-mode=append",
            f"--output={out}/logs/%x-%j.out", f"--error={out}/logs/%x-%j.err"]


def test_pyxis_command(folders):
    t = folders
    proc = dry_run(t, "train.sbatch", "--set", "train.lr=0.01", BADBLOCK_RUNTIME="pyxis",
                   BADBLOCK_IMAGE="/images/badblock.sqsh", BADBLOCK_SRUN_ARGS="--mpi=none")
    assert proc.returncode == 0, proc.stderr
    assert shlex.split(proc.stdout) == [
        *logs_flags(t / "out"), "--mpi=none", "--container-image=/images/badblock.sqsh",
        f"--container-mounts={t}/data:/data:ro,{t}/out:/output,{t}/my.yaml:/config/my.yaml:ro",
        "--container-workdir=/output", "/opt/nvidia/nvidia_entrypoint.sh",
        "/opt/badblock/docker/entrypoint.sh", "train", "--set", "train.lr=0.01"]
    assert (t / "out" / "logs").is_dir()
    # NGC's NVIDIA_VISIBLE_DEVICES=all would make enroot fail on a node without the driver.
    no_driver = shutil.which("nvidia-smi") is None
    assert ("NVIDIA_VISIBLE_DEVICES=void" in proc.stderr) == no_driver


def test_docker_command(folders):
    t = folders
    proc = dry_run(t, "repair.sbatch", "scan.hs", BADBLOCK_RUNTIME="docker",
                   BADBLOCK_IMAGE="badblock:test", BADBLOCK_REPO=str(ROOT),
                   CUDA_VISIBLE_DEVICES="2,3", BADBLOCK_ARGS="--force")
    assert proc.returncode == 0, proc.stderr
    assert shlex.split(proc.stdout) == [
        *logs_flags(t / "out"), "bash", f"{ROOT}/run-docker.sh", "--image", "badblock:test",
        "--data", f"{t}/data", "--output", f"{t}/out", "--config", f"{t}/my.yaml",
        "--gpus", '"device=2,3"', "repair", "scan.hs", "--force"]


def test_host_command_and_environment(folders):
    t = folders
    proc = dry_run(t, "preprocess.sbatch", "/raid/scans", BADBLOCK_RUNTIME="host",
                   BADBLOCK_PYTHON="/opt/py/bin/python")
    assert proc.returncode == 0, proc.stderr
    assert shlex.split(proc.stdout) == [*logs_flags(t / "out"), "/opt/py/bin/python", "-m",
                                        "badblock", "preprocess", "/raid/scans"]
    # What the job's log says about where it runs and where its logs go.
    assert "runtime host" in proc.stderr and f"logs: {t}/out/logs/" in proc.stderr
    assert re.search(r"rendezvous 127\.0\.0\.1:\d+", proc.stderr)


def test_auto_runtime_and_bad_runtime(folders):
    proc = dry_run(folders, "train.sbatch", BADBLOCK_RUNTIME="auto", PATH="/usr/bin:/bin")
    assert proc.returncode == 0
    expected = "pyxis" if "--container-image" in subprocess.run(
        ["bash", "-c", "srun --help 2>/dev/null || true"], capture_output=True,
        text=True).stdout else "host"
    assert f"runtime {expected}" in proc.stderr
    proc = dry_run(folders, "train.sbatch", BADBLOCK_RUNTIME="kubernetes")
    assert proc.returncode == 2 and "use pyxis, docker or host" in proc.stderr


def test_sbatch_headers_requeue_and_signal_the_batch_shell():
    for name in ["preprocess", "fills", "train", "repair"]:
        text = (ROOT / "slurm" / f"{name}.sbatch").read_text()
        header = [line for line in text.splitlines() if line.startswith("#SBATCH")]
        assert "#SBATCH --requeue" in header and "#SBATCH --open-mode=append" in header
        assert any(re.fullmatch(r"#SBATCH --signal=B:USR2@\d+", line) for line in header)
        assert not any("gpus-per-task" in line for line in header)
        # Nothing a small node lacks: a job asking for more CPUs than any node has pends forever.
        assert not any("cpus-per-task" in line or "--mem" in line for line in header)
        # sbatch stops reading #SBATCH lines at the first command: all must come before it.
        first_command = next(i for i, line in enumerate(text.splitlines())
                             if line and not line.startswith("#"))
        assert all(text.splitlines().index(h) < first_command for h in header)


def test_missing_checkout_is_a_clear_error(tmp_path):
    script = tmp_path / "train.sbatch"
    script.write_text((ROOT / "slurm" / "train.sbatch").read_text())  # as sbatch's spool copy
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BADBLOCK_", "SLURM_"))}
    env["SLURM_SUBMIT_DIR"] = str(tmp_path)
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 2 and "set BADBLOCK_REPO" in proc.stderr


def test_preprocess_without_inputs_reads_the_data_folder(folders):
    t = folders
    proc = dry_run(t, "preprocess.sbatch", BADBLOCK_RUNTIME="host", BADBLOCK_PYTHON="py")
    assert proc.returncode == 0, proc.stderr
    assert shlex.split(proc.stdout)[-3:] == ["badblock", "preprocess", f"{t}/data"]
    proc = dry_run(t, "preprocess.sbatch", BADBLOCK_RUNTIME="pyxis")
    assert shlex.split(proc.stdout)[-2:] == ["preprocess", "/data"]
    proc = dry_run(t, "preprocess.sbatch", BADBLOCK_RUNTIME="host",
                   BADBLOCK_DATA=str(t / "nowhere"))
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "no inputs" in line and f"{t}/nowhere" in line and "does not exist" in line


def test_repair_without_scans_is_one_clear_line(folders):
    proc = dry_run(folders, "repair.sbatch", BADBLOCK_RUNTIME="host")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "no scans to repair" in line


def test_threads_follow_the_cpus_slurm_gave(folders, tmp_path):
    """--cpus-per-task=N: the stage runs with N threads, unless run.threads is set."""
    show = tmp_path / "show.sh"
    show.write_text('#!/bin/sh\necho "threads=$BADBLOCK_RUN__THREADS omp=$OMP_NUM_THREADS"\n')
    show.chmod(0o755)
    for preset, expected in [("", "threads=6 omp=6"), ("2", "threads=2 ")]:
        env = {"BADBLOCK_RUNTIME": "host", "BADBLOCK_PYTHON": str(show),
               "SLURM_CPUS_PER_TASK": "6", "BADBLOCK_DRY_RUN": "0",
               "PATH": f"{tmp_path}:/usr/bin:/bin"}
        if preset:
            env["BADBLOCK_RUN__THREADS"] = preset
        srun = tmp_path / "srun"  # runs the command after srun's own options, as srun would
        srun.write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
        srun.chmod(0o755)
        proc = dry_run(folders, "train.sbatch", **env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(expected)
