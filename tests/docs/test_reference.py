"""The generated references (docs/reference/cli.md, config.md) are what the code generates now,
and they cover every subcommand option and every config key."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_docs.py"


def _gen():
    spec = importlib.util.spec_from_file_location("gen_docs", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check(docs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--check", "--docs", str(docs)],
                          capture_output=True, text=True, timeout=120)


def test_committed_references_are_current():
    out = _check(ROOT / "docs" / "reference")
    assert out.returncode == 0, out.stderr + "\nrun: python scripts/gen_docs.py"


def test_check_fails_on_a_stale_page(tmp_path):
    assert subprocess.run([sys.executable, str(SCRIPT), "--docs", str(tmp_path)],
                          timeout=120).returncode == 0
    assert _check(tmp_path).returncode == 0
    page = tmp_path / "config.md"
    page.write_text(page.read_text().replace("| `train.epochs` | `int` | `20` |",
                                             "| `train.epochs` | `int` | `28` |"))
    out = _check(tmp_path)
    assert out.returncode == 1 and "config.md" in out.stderr
    (tmp_path / "cli.md").unlink()
    assert "cli.md" in _check(tmp_path).stderr


def test_every_config_key_has_a_row_with_its_default():
    from badblock.config import Config

    text = _gen().config_reference()
    rows = {m.group(1): m.group(2) for m in
            re.finditer(r"^\| `([a-z_]+\.[a-z_0-9]+)` \| .*? \| `(.*?)` \|", text, re.M)}
    keys = {f"{section.name}.{f.name}": getattr(getattr(Config(), section.name), f.name)
            for section in dataclasses.fields(Config)
            for f in dataclasses.fields(section.default_factory)}
    assert set(rows) == set(keys)
    # a few defaults written out by hand, read from the dataclasses' source
    assert rows["train.epochs"] == str(keys["train.epochs"]) == "20"
    assert rows["run.output"] == "badblock-output"
    assert rows["scanner.dead_blocks"] == "['3:1']"
    assert rows["scanner.mask"] == "null"


def test_config_meanings_are_the_code_comments():
    text = _gen().config_reference()
    row = next(line for line in text.splitlines() if line.startswith("| `data.mask_stack`"))
    # the comment block above the field, joined
    assert ("With mask_channel: pass the mask of every one of the 2k+1 planes (how much each "
            "neighbouring plane lost), not only the centre plane's.") in row
    row = next(line for line in text.splitlines() if line.startswith("| `repair.batch_size`"))
    assert row.endswith("| plane stacks per network call |")  # the comment on its line


def test_every_subcommand_option_is_listed():
    from badblock.cli import build_parser

    text = _gen().cli_reference()
    parser, modules = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sections = re.split(r"^## badblock ", text, flags=re.M)[1:]
    by_name = {s.split("\n", 1)[0]: s for s in sections}
    assert set(by_name) == set(modules)
    for name, p in sub.choices.items():
        for action in p._actions:
            for opt in action.option_strings:
                if opt not in ("-h", "--help"):
                    assert f"`{opt}" in by_name[name] or f", {opt}" in by_name[name], (name, opt)
