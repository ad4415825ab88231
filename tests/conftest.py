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
        problem = None
        if os.geteuid() != 0:
            problem = "mounting a small tmpfs needs root"
        else:
            res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(kib)}k", "tmpfs",
                                  str(where)], capture_output=True, text=True)
            if res.returncode != 0:
                problem = f"cannot mount a tmpfs here ({res.stderr.strip() or res.returncode})"
        if problem:
            if REQUIRE_MOUNT:
                pytest.fail(problem + " (BADBLOCK_REQUIRE_MOUNT=1)")
            pytest.skip(problem)
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)
