"""The README stays true: its links resolve, its test command is the one CI runs, its pipeline
commands parse with the real CLI, and its config example loads."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, re.M | re.S)


def test_relative_links_and_images_resolve():
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links to the docs"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing


def test_test_command_is_what_ci_runs():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd ", "export ", "  "))]
    assert ci == ["bash scripts/test.sh"]
    assert any(line.split("#")[0].strip() == ci[0] for b in _blocks("bash")
               for line in b.splitlines())


def test_pipeline_commands_parse():
    from badblock.cli import build_parser

    parser, _ = build_parser()
    block = next(b for b in _blocks("bash") if "badblock simulate" in b)
    commands = " ".join(line.split("#")[0] for line in block.replace("\\\n", " ").splitlines())
    runs = [c.split() for c in re.split(r"(?=\bbadblock )", commands) if c.strip()]
    assert [r[1] for r in runs] == ["simulate", "mask", "preprocess", "fills", "train",
                                    "evaluate", "repair"]
    for argv in runs:
        args = parser.parse_args(shlex.split(" ".join(argv[1:])))
        assert args.command == argv[1]


def test_config_example_loads(tmp_path):
    from badblock.config import load_config

    example = next(b for b in _blocks("yaml") if "base:" in b)
    path = tmp_path / "my.yaml"
    path.write_text(example)
    cfg = load_config(path)
    written = yaml.safe_load(example)
    assert cfg.scanner.name == written["base"]  # the preset sets the scanner of its name
    assert cfg.train.epochs == written["train"]["epochs"]
    assert cfg.data.batch_size == written["data"]["batch_size"]
