"""run-docker.sh builds the right `docker` command: a fake `docker` first on PATH records it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docker.conftest import ROOT

SCRIPT = ROOT / "run-docker.sh"
FAKE_DOCKER = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["FAKE_DOCKER_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
# What runc says where the daemon cannot raise the limits (rootless Docker, this kind of VM).
if "--ulimit" in sys.argv and os.environ.get("FAKE_DOCKER_NO_RLIMIT"):
    sys.stderr.write("docker: Error response from daemon: ... error setting rlimit type 8: "
                     "operation not permitted: unknown.\\n")
    sys.exit(125)
"""


@pytest.fixture
def env(tmp_path):
    """An environment with the fake docker first on PATH, a data and an output folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    (tmp_path / "data").mkdir()
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("BADBLOCK_", "SLURM_", "MASTER_"))}
    e.update(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_DOCKER_LOG=str(tmp_path / "calls"),
             USER="alice", BADBLOCK_DOCKER_SOCKS=str(tmp_path / "socks"),
             BADBLOCK_DATA=str(tmp_path / "data"), BADBLOCK_OUTPUT=str(tmp_path / "out"))
    return e


def run(env, *args, ok=True, stdin=subprocess.DEVNULL):
    proc = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          stdin=stdin, cwd=Path(env["BADBLOCK_DATA"]).parent)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def all_calls(env) -> list[list[str]]:
    path = Path(env["FAKE_DOCKER_LOG"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def is_probe(argv: list[str]) -> bool:
    """run-docker.sh's check that the daemon can raise the ulimits: a container running true."""
    return "--entrypoint" in argv and argv[argv.index("--entrypoint") + 1] == "true"


def calls(env) -> list[list[str]]:
    """The docker commands run-docker.sh ran, less its ulimit probes."""
    return [argv for argv in all_calls(env) if not is_probe(argv)]


def pairs(argv: list[str], flag: str) -> list[str]:
    """Values of every ``flag VALUE`` occurrence."""
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_stage_mode_has_every_flag(env, tmp_path):
    env["BADBLOCK_TRAIN__EPOCHS"] = "3"
    run(env, "--image", "badblock:test", "train", "--set", "train.lr=0.1")
    [argv] = calls(env)
    assert argv[0] == "run" and "-H" not in argv  # no DGX socket here
    for flag in ["--rm", "--init", "--ipc=host"]:
        assert flag in argv
    assert pairs(argv, "--ulimit") == ["memlock=-1", "stack=67108864"]
    assert pairs(argv, "--gpus") == ["all"]
    assert pairs(argv, "--user") == [f"{os.getuid()}:{os.getgid()}"]
    volumes = pairs(argv, "-v")
    assert f"{(tmp_path / 'data').resolve()}:/data:ro" in volumes
    assert f"{(tmp_path / 'out').resolve()}:/output" in volumes  # writable: no :ro
    assert (tmp_path / "out").is_dir()  # created for the user, not by docker as root
    envs = pairs(argv, "-e")
    assert {"BADBLOCK_DATA=/data", "BADBLOCK_OUTPUT=/output", "BADBLOCK_TRAIN__EPOCHS"} <= set(envs)
    assert "--network=host" not in argv  # only inside Slurm jobs
    i = argv.index("badblock:test")
    assert argv[i + 1:] == ["train", "--set", "train.lr=0.1"]
    assert "-t" not in argv[:i] and "-it" not in argv[:i]  # no terminal: no tty


def test_shell_mode_is_interactive(env):
    run(env)
    run(env, "shell")
    for argv in calls(env):
        i = argv.index("badblock:latest")
        assert argv[i + 1:] == ["shell"]
        assert "-i" in argv[:i]


def test_dgx_user_socket_used_when_present(env, tmp_path):
    sock_dir = tmp_path / "socks" / "alice"
    sock_dir.mkdir(parents=True)
    sock_path = sock_dir / "docker.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        run(env, "evaluate")
    [argv] = calls(env)
    assert argv[:3] == ["-H", f"unix://{sock_path}", "run"]


def test_socket_on_request_and_missing_socket(env, tmp_path):
    sock_path = tmp_path / "my.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        run(env, "--socket", str(sock_path), "repair")
    assert calls(env)[0][:2] == ["-H", f"unix://{sock_path}"]
    proc = run(env, "--socket", str(tmp_path / "nope.sock"), "repair", ok=False)
    assert proc.returncode == 2 and "nope.sock does not exist" in proc.stderr
    assert len(calls(env)) == 1


def test_config_file_mounted_read_only_and_preset_passed(env, tmp_path):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("train: {epochs: 1}\n")
    run(env, "--config", str(cfg), "--gpus", "none", "train")
    run(env, "--config", "demo", "train")
    first, second = calls(env)
    assert f"{cfg}:/config/my.yaml:ro" in pairs(first, "-v")
    assert "BADBLOCK_CONFIG=/config/my.yaml" in pairs(first, "-e")
    assert "--gpus" not in first
    assert "BADBLOCK_CONFIG=demo" in pairs(second, "-e")
    proc = run(env, "--config", str(tmp_path / "missing.yaml"), "train", ok=False)
    assert proc.returncode == 2 and "missing.yaml does not exist" in proc.stderr


def test_inside_slurm_job_passes_ranks_and_host_network(env):
    env.update(SLURM_JOB_ID="42", SLURM_PROCID="1", SLURM_LOCALID="1", MASTER_ADDR="node1",
               MASTER_PORT="20042", SLURM_CONF="/etc/slurm/slurm.conf")
    run(env, "--gpus", '"device=0,1"', "train")
    [argv] = calls(env)
    envs = pairs(argv, "-e")
    wanted = {"SLURM_JOB_ID", "SLURM_PROCID", "SLURM_LOCALID", "MASTER_ADDR", "MASTER_PORT"}
    assert wanted <= set(envs)
    assert "SLURM_CONF" not in envs
    assert "--network=host" in argv
    assert pairs(argv, "--gpus") == ['"device=0,1"']


def test_bad_input(env, tmp_path):
    proc = run(env, "--data", str(tmp_path / "nowhere"), "train", ok=False)
    assert proc.returncode == 2 and "nowhere does not exist" in proc.stderr
    proc = run(env, "--frobnicate", ok=False)
    assert proc.returncode == 2 and "unknown option --frobnicate" in proc.stderr
    assert calls(env) == []


def test_dry_run_prints_without_running(env):
    proc = run(env, "--dry-run", "simulate")
    assert proc.stdout.startswith("docker run ") and "simulate" in proc.stdout
    assert calls(env) == []


def test_ulimits_dropped_where_the_daemon_cannot_raise_them(env):
    env["FAKE_DOCKER_NO_RLIMIT"] = "1"
    proc = run(env, "--image", "badblock:test", "mask")
    assert "cannot raise memlock/stack limits" in proc.stderr
    [probe] = [argv for argv in all_calls(env) if is_probe(argv)]
    assert pairs(probe, "--ulimit") == ["memlock=-1", "stack=67108864"] and "badblock:test" in probe
    [argv] = calls(env)
    assert "--ulimit" not in argv and argv[-1] == "mask"


def test_ulimits_on_or_off_on_request(env):
    env["FAKE_DOCKER_NO_RLIMIT"] = "1"
    run(env, "--ulimits", "off", "mask")
    env["BADBLOCK_DOCKER_ULIMITS"] = "on"
    run(env, "mask", ok=False)  # the daemon refuses them, as told
    assert not any(is_probe(argv) for argv in all_calls(env))
    off, on = calls(env)
    assert "--ulimit" not in off
    assert pairs(on, "--ulimit") == ["memlock=-1", "stack=67108864"]
    proc = run(env, "--ulimits", "maybe", "mask", ok=False)
    assert proc.returncode == 2 and "use auto, on or off" in proc.stderr
