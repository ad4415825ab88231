"""Helpers for the container tests: the repository root, tools that CI must have, the project's
own Docker engine (tests/docker/docker-local.sh) and image builds against it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Read at import: the autouse fixture in tests/conftest.py clears BADBLOCK_* before each test.
# CI (.ci/run) installs shellcheck and sets this, so that there a missing tool fails the test.
REQUIRE_TOOLS = os.environ.get("BADBLOCK_REQUIRE_TOOLS") == "1"


def require_tool(name: str) -> str:
    """Path of ``name``; skip (fail under BADBLOCK_REQUIRE_TOOLS=1) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (CI installs it; apt-get install {name})"
        if REQUIRE_TOOLS:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


# The project's own Docker engine (tests/docker/docker-local.sh). Without one the image tests
# skip with the reason; CI starts it and sets BADBLOCK_REQUIRE_DOCKER=1: a skip is a failure.
REQUIRE_DOCKER = os.environ.get("BADBLOCK_REQUIRE_DOCKER") == "1"
DOCKER_DIR = Path(os.environ.get("BADBLOCK_DOCKER_DIR", "/var/tmp/badblock-docker"))
DOCKER_HOST = f"unix://{DOCKER_DIR / 'docker.sock'}"
# Debian's client: the one first on PATH may have no BuildKit (no buildx plugin).
DOCKER = os.environ.get("BADBLOCK_DOCKER_CLIENT", "/usr/bin/docker")
LOCAL = ROOT / "tests" / "docker" / "docker-local.sh"


def docker_env(**extra: str) -> dict[str, str]:
    """The environment for docker commands: our daemon, BuildKit, no BADBLOCK_* of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BADBLOCK_", "SLURM_"))}
    env.update(DOCKER_HOST=DOCKER_HOST, DOCKER_BUILDKIT="1", **extra)
    return env


def _engine_problem() -> str | None:
    start = f"start it: {LOCAL.relative_to(ROOT)} start"
    if not Path(DOCKER).exists():
        return f"{DOCKER} is missing (apt-get install docker.io tini; scripts/setup-system.sh)"
    if not (DOCKER_DIR / "docker.sock").exists():
        return f"no project Docker daemon ({DOCKER_DIR / 'docker.sock'} missing; {start})"
    proc = subprocess.run([DOCKER, "info"], env=docker_env(), capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        return f"the project Docker daemon does not answer ({proc.stderr.strip()}; {start})"
    return None


@pytest.fixture(scope="session")
def engine() -> dict[str, str]:
    """Skip (fail in CI) unless the project's dockerd is up; the environment to talk to it."""
    problem = _engine_problem()
    if problem:
        if REQUIRE_DOCKER:
            pytest.fail(problem + " (BADBLOCK_REQUIRE_DOCKER=1)")
        pytest.skip(problem)
    return docker_env()


def docker(env: dict[str, str], *args: str, timeout: float = 600, check: bool = True,
           **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)
    if check:
        assert proc.returncode == 0, f"docker {' '.join(args)}:\n{proc.stdout[-4000:]}\n" \
                                     f"{proc.stderr[-4000:]}"
    return proc


def pip_secrets(folder: Path) -> list[str]:
    """`docker build` options that hand this machine's pip settings to the build as BuildKit
    secrets, the way a site behind a mirror or a TLS-inspecting proxy must: its index and its
    CA bundle (the paths in the local pip config mean nothing inside the build)."""
    index = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"
    conf = folder / "pip.conf"
    conf.write_text(f"[global]\nindex-url = {index}\ndefault-timeout = 180\n")
    cert = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or \
        "/etc/ssl/certs/ca-certificates.crt"
    args = ["--secret", f"id=pipconf,src={conf}"]
    if Path(cert).is_file():
        args += ["--secret", f"id=pipcert,src={cert}"]
    return args


def build(env: dict[str, str], context: Path, tag: str, secrets_dir: Path) -> str:
    """`docker build` of ``context`` with BuildKit; returns the plain progress log."""
    proc = docker(env, "build", "--network", "host", "--progress", "plain",
                  *pip_secrets(secrets_dir), "-t", tag, str(context), timeout=1500)
    return proc.stderr + proc.stdout
