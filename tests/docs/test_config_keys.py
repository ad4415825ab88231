"""Every config key the docs and the README name (``train.epochs``, ``--set data.target=...``)
exists, so a renamed or removed key cannot linger in the prose."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from badblock.config import Config

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {f.name: {g.name for g in dataclasses.fields(f.default_factory)}
            for f in dataclasses.fields(Config)}
# section.key in code, not part of a dotted module path, a call (model.describe()) or a file name
KEY = re.compile(r"(?<![\w./-])(" + "|".join(SECTIONS) + r")\.([a-z_][a-z_0-9]*)\b(?![(/])")
FILE_TYPES = {"py", "md", "yaml", "yml", "json", "npy", "png", "txt", "sh", "hs", "s", "pt"}
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)


def _is_module(section: str, name: str) -> bool:
    """``data.blockmasks``, ``train.validate``: short for a module of the package, not a key."""
    path = ROOT / "badblock" / section / name
    return path.is_dir() or path.with_suffix(".py").is_file()


def named_keys(text: str) -> set[str]:
    """Keys named in fenced code blocks and in inline code spans of a Markdown text."""
    code = FENCE.findall(text) + re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    return {m.group(0) for c in code for m in KEY.finditer(c)
            if m.group(2) not in FILE_TYPES and not _is_module(m.group(1), m.group(2))}


def test_the_scanner_finds_keys():
    # hand-made text: two keys, a module path, a call and a key outside code
    text = ("Set `train.epochs` or `--set data.target=truth`; `badblock.data.sources`, "
            "`model.describe()`, `train.validate` and `demo.py` are code; train.epochs outside "
            "code is prose.\n"
            "```bash\nbadblock train --set optim.lr=1e-3 -o run/  # repair.py\n```\n")
    assert named_keys(text) == {"train.epochs", "data.target", "optim.lr"}


def test_every_named_key_exists():
    # refused-inputs.md shows what badblock says to misspelt keys (run.sede): those must not exist
    pages = [p for p in sorted((ROOT / "docs").rglob("*.md")) if p.name != "refused-inputs.md"]
    pages.append(ROOT / "README.md")
    unknown = {}
    for page in pages:
        for key in named_keys(page.read_text()):
            section, name = key.split(".")
            if name not in SECTIONS[section]:
                unknown.setdefault(str(page.relative_to(ROOT)), []).append(key)
    assert not unknown
