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
