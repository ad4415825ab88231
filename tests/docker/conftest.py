"""Helpers for the container tests: the repository root, tools that CI must have."""

from __future__ import annotations

import os
import shutil
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
