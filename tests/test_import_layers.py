"""The import contracts of pyproject.toml (``[tool.importlinter]``) hold, and they have teeth: a
copy of the package with one forbidden import added fails ``lint-imports``, naming the import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    if not LINT.is_file():
        pytest.fail(f"{LINT} is missing: bash scripts/setup.sh --dev installs import-linter")
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([str(LINT), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_contracts_hold():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("io/interfile.py", "import badblock.train.loop", "physics and io know nothing"),
    ("physics/wrap.py", "from badblock.inference import predictor", "physics and io know nothing"),
    ("models/unet.py", "import badblock.train.losses", "models never import"),
    ("repair.py", "from badblock.commands import common", "imported only by badblock.cli"),
    ("repair.py", "from badblock.data import sources", "Layers"),
    ("io/flat.py", "import torch", "without torch"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, contract):
    shutil.copytree(ROOT / "badblock", tmp_path / "badblock",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "badblock" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    out = _lint(tmp_path)
    assert out.returncode != 0, out.stdout
    broken = [s for s in out.stdout.splitlines() if " BROKEN" in s or s.endswith("BROKEN")]
    assert any(contract in s for s in broken), out.stdout
    assert "badblock." + module.removesuffix(".py").replace("/", ".") in out.stdout


def test_the_docs_layer_picture_is_the_contract():
    """docs/development.md lists the layers of the contract, in its order."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c["layers"] for c in config["contracts"] if c["type"] == "layers")
    want = [" | ".join(m.removeprefix("badblock.") for m in layer.split(" | "))
            for layer in layers]
    text = " ".join((ROOT / "docs" / "development.md").read_text().split())
    picture = text.split("**layers**, top to bottom: ", 1)[1].split(" (`|`", 1)[0]
    assert [item.strip("`") for item in picture.split("; ")] == want
