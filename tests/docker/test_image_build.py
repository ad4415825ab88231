"""The image built for real with BuildKit on the project's own dockerd, FROM the NGC-shaped
stand-in base (tests/docker/docker-local.sh), and every stage run through it as a user would:
data mounted read-only, output writable, as root and as another uid."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.docker.conftest import DOCKER, LOCAL, ROOT, build, docker

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NGC_TAG = re.search(r"^ARG NGC_TAG=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M).group(1)
BASE = f"nvcr.io/nvidia/pytorch:{NGC_TAG}-py3"
TAG = "badblock:pytest"
NET = ["--network", "host"]  # the project's daemon has no bridge
TINY = ["--set", "data.batch_size=4", "--set", "model.width=4", "--set", "train.val_batches=1",
        "--set", "train.tensorboard=false", "--set", "data.epoch_size=16"]
TORCH_PROBE = ("import hashlib, importlib.metadata as m, torch; print(torch.__version__, "
               "m.version('torch'), hashlib.sha256(open(torch.__file__, 'rb').read()).hexdigest())")


@pytest.fixture(scope="module")
def image(engine, tmp_path_factory) -> dict:
    """The stand-in base (made once, kept while its recipe holds) and the Dockerfile built on it
    unchanged; returns the environment that talks to the daemon."""
    proc = subprocess.run(["bash", str(LOCAL), "base"], env=engine, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    build(engine, ROOT, TAG, tmp_path_factory.mktemp("secrets"))
    return {"env": engine}


def run(image: dict, *args: str, check: bool = True, timeout: float = 600):
    return docker(image["env"], "run", "--rm", *NET, *args, check=check, timeout=timeout)


def owned_folder(path: Path, uid: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid)
    return path


def test_torch_is_still_the_bases(image):
    base = run(image, "--entrypoint", "python", BASE, "-c", TORCH_PROBE).stdout.split()
    ours = run(image, TAG, "shell", "python", "-c", TORCH_PROBE).stdout.split()[-3:]
    assert base[0] == base[1] and re.fullmatch(r"\d+\.\d+\.\d+a0\+nv\d\d\.\d\d", base[0])
    assert ours == base  # version, installed metadata, and the very same file


def test_pip_settings_are_not_left_in_the_image(image):
    """The secrets (used by the install steps: test_layer_cache_after_an_edit) are nowhere in
    the image."""
    out = run(image, TAG, "shell", "-c",
              "ls -A /run/secrets 2>/dev/null | wc -l; env | grep -c '^PIP_C\\(ERT\\|ONFIG\\)' || "
              "true; grep -rl 'index-url' /etc/pip* /root/.config 2>/dev/null | wc -l").stdout
    assert out.split()[-3:] == ["0", "0", "0"]
    history = docker(image["env"], "history", "--no-trunc", TAG).stdout
    assert "pypi" not in history and "BEGIN CERTIFICATE" not in history


def test_nvidia_entrypoint_runs_first_and_exit_codes_pass_through(image, tmp_path):
    out = owned_folder(tmp_path / "out", 0)
    bad = run(image, "-v", f"{out}:/output", TAG, "mask", "--scanner", "nosuch", check=False)
    assert bad.returncode == 2, bad.stderr
    assert "PyTorch Version" in bad.stdout  # NVIDIA's banner: its entrypoint ran
    assert "unknown scanner 'nosuch'" in bad.stderr
    assert run(image, TAG, "shell", "-c", "exit 7", check=False).returncode == 7


def test_stage_from_the_environment_alone(image, tmp_path):
    """docker run -e BADBLOCK_STAGE=mask IMAGE: the stage runs (no CMD turns it into --help)."""
    out = owned_folder(tmp_path / "out", 0)
    proc = run(image, "-e", "BADBLOCK_STAGE=mask", "-e", "BADBLOCK_SCANNER__NAME=mini",
               "-e", "BADBLOCK_SCANNER__DEAD_BLOCKS=['5:1']", "-v", f"{out}:/output", TAG)
    assert "usage:" not in proc.stdout
    mask = np.load(out / "mask.npy", allow_pickle=False)
    assert mask.ndim == 3 and 0 < mask.max() <= 1


def test_unmounted_output_or_data_is_refused(image, tmp_path):
    out = owned_folder(tmp_path / "out", 0)
    proc = run(image, TAG, "mask", "--scanner", "mini", check=False)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "BADBLOCK_OUTPUT=/output is not on a mounted volume" in line
    assert "BADBLOCK_REQUIRE_MOUNTS=0" in line
    proc = run(image, "-v", f"{out}:/output", TAG, "preprocess", check=False)
    assert proc.returncode == 2 and "BADBLOCK_DATA=/data is not on a mounted volume" in proc.stderr
    assert not any(out.iterdir())
    # The explicit opt-out, for a user who means it.
    proc = run(image, "-e", "BADBLOCK_REQUIRE_MOUNTS=0", TAG, "mask", "--scanner", "mini")
    assert "wrote /output/mask.npy" in proc.stdout + proc.stderr


@pytest.mark.parametrize("uid", [0, 4321])
def test_every_stage_through_the_image(image, tmp_path, uid):
    """simulate -> mask -> preprocess -> train -> repair, the scans mounted read-only."""
    out = owned_folder(tmp_path / "out", uid)
    scans = owned_folder(tmp_path / "scans", uid)
    sim = scans / "sim"  # (simulate replaces its output folder whole: not a mount point itself)
    user = ["--user", f"{uid}:{uid}"]

    def stage(*args, data=sim):
        proc = run(image, *user, "-v", f"{data}:/data:ro", "-v", f"{out}:/output", TAG, *args)
        return proc.stdout + proc.stderr

    run(image, *user, "-v", f"{scans}:/output", TAG, "simulate", "--scans", "2", "--counts",
        "2e5", "-o", "/output/sim")
    assert sorted(p.name for p in sim.glob("scan_00?.hs")) == ["scan_000.hs", "scan_001.hs"]
    stage("mask", "--scanner", "mini", "--dead-blocks", "5:1")
    stage("preprocess", "/data")
    assert (out / "store" / "manifest.json").is_file()
    log = stage("train", "--epochs", "1", *TINY)
    assert "finished:" in log
    # the simulated scan is complete (its block 5:1 holds counts): the mask check would rightly
    # refuse it; this test is about the stage running in the image
    stage("repair", "--checkpoint", "/output/train/checkpoint_final.pt", "--mask",
          "/output/mask.npy", "--no-mask-check", "/data/scan_001.hs", "-o", "/output/repaired/")
    repaired = out / "repaired" / "scan_001.s"
    damaged = sim / "scan_001.s"
    assert repaired.stat().st_size == damaged.stat().st_size
    assert repaired.read_bytes() != damaged.read_bytes()  # the dead block was filled in
    # Outputs belong to the user who ran the container; the scans were not writable.
    for path in [out / "mask.npy", out / "store" / "manifest.json", repaired,
                 out / "train" / "checkpoint_final.pt"]:
        assert path.stat().st_uid == uid, path
    proc = run(image, *user, "-v", f"{sim}:/data:ro", "-v", f"{out}:/output", TAG, "shell", "-c",
               "touch /data/x", check=False)
    assert proc.returncode != 0 and "Read-only file system" in proc.stderr


def build_context_copy(dest: Path) -> Path:
    """What the build sees (tracked files the Dockerfile copies), in a folder we may edit."""
    files = subprocess.run(["git", "ls-files", "Dockerfile", ".dockerignore", "requirements.txt",
                            "pyproject.toml", "badblock", "docker"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    return dest


def step_states(log: str) -> dict[str, bool]:
    """For each RUN/COPY step of a plain-progress BuildKit log: was it CACHED?"""
    names, cached = {}, set()
    for m in re.finditer(r"^#(\d+) \[\s*\d+/\d+\] (.+)$", log, re.M):
        names[m.group(1)] = m.group(2)
    for m in re.finditer(r"^#(\d+) CACHED$", log, re.M):
        cached.add(m.group(1))
    return {name: num in cached for num, name in names.items()}


def state_of(states: dict[str, bool], needle: str) -> bool:
    [hit] = [cached for name, cached in states.items() if needle in name]
    return hit


def test_layer_cache_after_an_edit(image, tmp_path):
    """A code edit re-runs only the package step (with the pip secrets, keeping the base's
    torch); an edit of the entrypoint or the README never re-runs pip. Each edit is new to the
    daemon's cache (a fresh token), so that an earlier run's cache cannot answer for it."""
    token = uuid.uuid4().hex
    ctx = build_context_copy(tmp_path / "ctx")
    init = ctx / "badblock" / "__init__.py"
    init.write_text(init.read_text() + f"\n# an edit {token}\n")
    log = build(image["env"], ctx, "badblock:pytest-edit", tmp_path)
    states = step_states(log)
    assert state_of(states, "--requirements-only") is True
    assert state_of(states, "--package-only") is False
    assert "pip settings from the build secret pipconf" in log
    assert re.search(r"install-deps: package installed; torch \S+a0\+nv\S+ kept", log)
    entry = ctx / "docker" / "entrypoint.sh"
    entry.write_text(entry.read_text() + f"\n# an edit {token}\n")
    (ctx / "README.md").write_text(f"edited {token}\n")  # not in the build context at all
    states = step_states(build(image["env"], ctx, "badblock:pytest-edit", tmp_path))
    assert state_of(states, "--requirements-only") is True
    assert state_of(states, "--package-only") is True
    assert state_of(states, "COPY docker/entrypoint.sh") is False
    docker(image["env"], "rmi", "badblock:pytest-edit")


def client_path(tmp_path: Path) -> str:
    """PATH with Debian's docker client first (run-docker.sh calls `docker`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").symlink_to(DOCKER)
    return f"{bin_dir}:{os.environ['PATH']}"


def test_run_docker_sh_runs_a_stage(image, tmp_path):
    env = dict(image["env"], PATH=client_path(tmp_path), BADBLOCK_GPUS="none",
               BADBLOCK_IMAGE=TAG)
    (tmp_path / "data").mkdir()
    proc = subprocess.run(["bash", str(ROOT / "run-docker.sh"), "--data", str(tmp_path / "data"),
                           "--output", str(tmp_path / "out"), "mask", "--scanner", "mini",
                           "--dead-blocks", "5:1"], env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "mask.npy").stat().st_uid == os.getuid()


def test_run_docker_sh_interactive_shell_under_a_pty(image, tmp_path):
    env = dict(image["env"], PATH=client_path(tmp_path), BADBLOCK_GPUS="none",
               BADBLOCK_IMAGE=TAG, TERM="dumb")
    (tmp_path / "data").mkdir()
    pid, fd = pty.fork()
    if pid == 0:  # the child: run-docker.sh with the pty as its terminal
        os.chdir(tmp_path)
        os.execve("/bin/bash", ["bash", str(ROOT / "run-docker.sh"), "--output", "out", "shell"],
                  env)
    screen = b""
    sent = False
    end = time.monotonic() + 120
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        if not sent and b"PyTorch Version" in screen:
            time.sleep(1.0)  # let the shell print its prompt
            os.write(fd, b"tty; echo answer=$((6*7)) uid=$(id -u); exit 3\r")
            sent = True
    _, status = os.waitpid(pid, 0)
    text = screen.decode(errors="replace")
    assert sent, text
    assert re.search(r"/dev/pts/\d+\r?\n", text), text  # a terminal inside the container
    assert f"answer=42 uid={os.getuid()}" in text
    assert os.waitstatus_to_exitcode(status) == 3

