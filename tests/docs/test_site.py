"""The docs site builds with ``mkdocs build --strict``: a broken link, anchor or nav entry fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _build(root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", str(root / "mkdocs.yml"), "-d", str(site)],
                          capture_output=True, text=True, timeout=300)


def test_site_builds_strict(tmp_path):
    out = _build(ROOT, tmp_path / "site")
    assert out.returncode == 0, out.stdout + out.stderr
    # every page of the nav became a page of the site, the generated references included
    for page in ("index.html", "reference/cli/index.html", "reference/config/index.html",
                 "howto/repair/index.html", "development/index.html"):
        assert (tmp_path / "site" / page).is_file(), page


@pytest.mark.parametrize("breakage", ["link", "anchor", "nav"])
def test_strict_build_fails_on_a_broken_link_anchor_or_nav_entry(tmp_path, breakage):
    """The same build on a copy of the docs with one thing broken must fail, naming it."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    config = (ROOT / "mkdocs.yml").read_text()
    page = copy / "docs" / "howto" / "repair.md"
    if breakage == "link":
        page.write_text(page.read_text() + "\nSee [the old page](../no-such-page.md).\n")
        expect = "no-such-page.md"
    elif breakage == "anchor":
        page.write_text(page.read_text() + "\n[The keys](../reference/config.md#no-such-key).\n")
        expect = "no-such-key"
    else:
        config = config.replace("  - Development: development.md\n",
                                "  - Development: development.md\n  - Gone: gone.md\n")
        expect = "gone.md"
    (copy / "mkdocs.yml").write_text(config)
    out = _build(copy, tmp_path / "site")
    assert out.returncode != 0
    assert expect in out.stdout + out.stderr
