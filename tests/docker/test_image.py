"""The image without a Docker engine: hadolint on the Dockerfile, shellcheck on every shell script,
the build context, and the image's install step reproduced in a fresh venv that holds an
NGC-style torch (pre-release version), which the step must leave alone."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.docker.conftest import ROOT, require_tool

DOCKERFILE = ROOT / "Dockerfile"
NGC_TORCH = "2.8.0a0+5228986c39.nv25.10"  # the form of NGC's torch version


def shell_scripts() -> list[Path]:
    """Every shell script of the repository: *.sh, *.sbatch and extension-less bash scripts."""
    found = set()
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if not path.is_file() or rel.parts[0] in {".venv", ".git", "build"} or \
                any(p.startswith(".") and p != ".ci" for p in rel.parts) or \
                "node_modules" in rel.parts:
            continue
        if path.suffix in {".sh", ".sbatch"}:
            found.add(path)
        elif not path.suffix:
            with open(path, "rb") as f:
                head = f.readline()
            if head.startswith(b"#!") and (b"bash" in head or head.rstrip().endswith(b"/sh")):
                found.add(path)
    return sorted(found)


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        require_tool("hadolint")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_passes_on_every_shell_script():
    shellcheck = require_tool("shellcheck")
    scripts = shell_scripts()
    names = {str(p.relative_to(ROOT)) for p in scripts}
    assert {"run-docker.sh", "docker/entrypoint.sh", "slurm/train.sbatch",
            "tests/cluster/slurm-local.sh", ".ci/run"} <= names
    proc = subprocess.run([shellcheck, "-x", *map(str, scripts)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def dockerfile_steps() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_dockerfile_uses_ngc_and_never_installs_torch():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG NGC_TAG=\d\d\.\d\d$", text, re.M)
    # A site mirror of NVIDIA's registry replaces the whole base reference.
    assert re.search(r"^ARG BASE_IMAGE=nvcr\.io/nvidia/pytorch:\$\{NGC_TAG\}-py3$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    runs = [s for s in dockerfile_steps() if s.startswith("RUN")]
    assert any("docker/install-deps.sh --requirements-only" in r for r in runs)
    assert any("docker/install-deps.sh --package-only" in r for r in runs)
    assert not re.search(r"pip[^\n]*install[^\n]*\btorch\b", text)
    assert "WORKDIR /opt/badblock" in text


def test_entrypoint_is_nvidias_then_ours_and_no_cmd():
    """NVIDIA's entrypoint (CUDA forward compatibility) execs ours; no CMD, whose arguments
    would replace BADBLOCK_STAGE's stage with --help."""
    steps = dockerfile_steps()
    [entry] = [s for s in steps if s.startswith("ENTRYPOINT")]
    assert json.loads(entry[len("ENTRYPOINT"):]) == ["/opt/nvidia/nvidia_entrypoint.sh",
                                                     "/opt/badblock/docker/entrypoint.sh"]
    assert not [s for s in steps if s.startswith("CMD")]


def test_pip_settings_come_as_build_secrets():
    """Both steps that run pip mount the site's pip.conf and CA bundle; the script uses them."""
    installs = [s for s in dockerfile_steps() if s.startswith("RUN") and "install-deps.sh" in s]
    assert len(installs) == 2
    for step in installs:
        assert "--mount=type=secret,id=pipconf" in step and "--mount=type=secret,id=pipcert" in step
    script = (ROOT / "docker" / "install-deps.sh").read_text()
    assert "PIP_CONFIG_FILE=$secrets/pipconf" in script and "PIP_CERT=$secrets/pipcert" in script
    assert not re.search(r"^(ARG|ENV) PIP_(INDEX|EXTRA|CERT|TRUSTED)", DOCKERFILE.read_text(), re.M)


def test_layer_order_keeps_pip_out_of_non_code_edits():
    """Only requirements.txt and install-deps.sh come before the requirements step, only
    pyproject.toml and the package before the package step; the entrypoint comes after both
    and the README not at all (each edit of it would re-run pip)."""
    steps = dockerfile_steps()
    req = next(i for i, s in enumerate(steps) if "--requirements-only" in s)
    pkg = next(i for i, s in enumerate(steps) if "--package-only" in s)
    copies = {i: s.split()[1:-1] for i, s in enumerate(steps) if s.startswith("COPY")}
    assert sorted(src for i, c in copies.items() if i < req for src in c) == [
        "docker/install-deps.sh", "requirements.txt"]
    assert sorted(src for i, c in copies.items() if req < i < pkg for src in c) == [
        "badblock", "pyproject.toml"]
    assert [src for i, c in copies.items() if i > pkg for src in c] == ["docker/entrypoint.sh"]
    assert not any("README" in src for c in copies.values() for src in c)


def test_build_context_keeps_what_the_dockerfile_copies():
    """.dockerignore excludes everything, then lets each COPY source back in."""
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"
    allowed = {p[1:].rstrip("/") for p in ignore if p.startswith("!")}
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY"):
            for src in line.split()[1:-1]:
                top = src.split("/")[0]
                assert top in allowed, f"{src} is excluded by .dockerignore"
                assert (ROOT / src).exists(), src


def fake_ngc_torch_wheel(folder: Path) -> Path:
    """A tiny wheel named torch with NGC's kind of version: what the image starts from."""
    name = f"torch-{NGC_TORCH}-py3-none-any.whl"
    dist = f"torch-{NGC_TORCH}.dist-info"
    files = {
        "torch/__init__.py": f'__version__ = "{NGC_TORCH}"\n',
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: torch\nVersion: {NGC_TORCH}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / name
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def pip_env(python: Path, tmp_path: Path) -> dict[str, str]:
    """Only the fresh venv on PATH; the user's HOME so that pip's download cache is reused."""
    return {"PATH": f"{python.parent}:/usr/bin:/bin", "PYTHON": str(python),
            "HOME": os.environ.get("HOME", str(tmp_path)), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def torch_state(python: Path) -> tuple[str, str]:
    code = ("import hashlib, torch; print(torch.__version__); "
            "print(hashlib.sha256(open(torch.__file__, 'rb').read()).hexdigest())")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    version, digest = out.stdout.split()
    return version, digest


@pytest.fixture(scope="module")
def ngc_like_venv(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ngc")
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(fake_ngc_torch_wheel(folder))], check=True)
    return python


@pytest.mark.slow
def test_install_step_keeps_ngc_torch(ngc_like_venv, tmp_path):
    """The Dockerfile's two RUN steps, run as they are, in a venv whose torch is NGC-like."""
    python = ngc_like_venv
    before = torch_state(python)
    assert before[0] == NGC_TORCH
    env = pip_env(python, tmp_path)
    # A copy of the build context, as `COPY` would give it (the checkout stays clean).
    src = tmp_path / "src"
    src.mkdir()
    for name in ["requirements.txt", "pyproject.toml"]:
        shutil.copy(ROOT / name, src / name)
    (src / "README.md").write_text("badblock\n")  # the image's one-line stand-in
    shutil.copytree(ROOT / "badblock", src / "badblock",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "docker", src / "docker")
    for step in ["--requirements-only", "--package-only"]:
        proc = subprocess.run(["bash", "docker/install-deps.sh", step, str(src)], cwd=src, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert f"torch {NGC_TORCH} kept" in proc.stdout
    assert torch_state(python) == before
    badblock = python.parent / "badblock"
    proc = subprocess.run([str(badblock), "--help"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "preprocess" in proc.stdout, proc.stderr
    # The package was installed, not linked to the source folder.
    where = subprocess.run([str(python), "-c", "import badblock; print(badblock.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env).stdout
    assert str(venv_site(python)) in where


def venv_site(python: Path) -> Path:
    return python.parent.parent / "lib"


def test_install_step_refuses_to_replace_torch(ngc_like_venv, tmp_path):
    """A requirement that would replace NGC's torch makes the step fail; torch stays as it was."""
    python = ngc_like_venv
    before = torch_state(python)
    src = tmp_path / "src"
    src.mkdir()
    (src / "requirements.txt").write_text("torch>=2.8.0\n")  # a release: NGC's a0 is below it
    env = pip_env(python, tmp_path)
    proc = subprocess.run(["bash", str(ROOT / "docker" / "install-deps.sh"), "--requirements-only",
                           str(src)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "ResolutionImpossible" in proc.stderr and "torch" in proc.stderr
    assert torch_state(python) == before


def test_install_step_needs_a_torch(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    proc = subprocess.run(["bash", str(ROOT / "docker" / "install-deps.sh"), str(ROOT)],
                          env={"PATH": "/usr/bin:/bin", "PYTHON": str(venv / "bin" / "python")},
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "torch is not installed" in proc.stderr
