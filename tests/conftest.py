"""Shared fixtures. Tests mirror the package layout (tests/io for badblock/io, ...)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TEST_DATA = TESTS / "fixtures"  # small real files copied from scanners and STIR


@pytest.fixture(autouse=True)
def _clean_badblock_env(monkeypatch):
    """Tests never see the developer's own BADBLOCK_* settings."""
    for var in list(os.environ):
        if var.startswith("BADBLOCK_"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BADBLOCK_PROGRESS", "0")


@pytest.fixture
def test_data() -> Path:
    return TEST_DATA


# Read at import: the autouse fixture above clears BADBLOCK_* before each test. CI (.ci/run)
# runs as root and sets it, so that there a disk-full test that cannot mount fails.
REQUIRE_MOUNT = os.environ.get("BADBLOCK_REQUIRE_MOUNT") == "1"


def _mount_or_skip(args: list[str], problem: str) -> None:
    """Run ``mount args``; without root or when it fails the test skips (fails under
    BADBLOCK_REQUIRE_MOUNT=1)."""
    import subprocess

    if os.geteuid() != 0:
        problem = f"{problem} needs root"
    else:
        res = subprocess.run(["mount", *args], capture_output=True, text=True)
        if res.returncode == 0:
            return
        problem = f"cannot mount {problem} here ({res.stderr.strip() or res.returncode})"
    if REQUIRE_MOUNT:
        pytest.fail(problem + " (BADBLOCK_REQUIRE_MOUNT=1)")
    pytest.skip(problem)


@pytest.fixture
def small_disk(tmp_path):
    """``make(kib) -> Path``: an empty tmpfs of ``kib`` KiB mounted under ``tmp_path``, a real
    file system that fills up; unmounted after the test. Mounting needs root: elsewhere the
    test skips (fails under BADBLOCK_REQUIRE_MOUNT=1)."""
    import subprocess

    mounted: list[Path] = []

    def make(kib: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        _mount_or_skip(["-t", "tmpfs", "-o", f"size={int(kib)}k", "tmpfs", str(where)],
                       "a small tmpfs")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def bind_mount(tmp_path):
    """``make() -> Path``: an empty folder of ``tmp_path``'s own file system bind-mounted on
    another one (as a container's ``-v host:/output`` is): a folder that cannot be renamed
    though ``os.path.ismount`` does not see it; unmounted after the test."""
    import subprocess

    mounted: list[Path] = []

    def make() -> Path:
        n = len(mounted)
        source, where = tmp_path / f"bound{n}", tmp_path / f"mount{n}"
        source.mkdir()
        where.mkdir()
        _mount_or_skip(["--bind", str(source), str(where)], "a bind mount")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)
