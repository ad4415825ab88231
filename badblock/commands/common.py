"""Arguments every stage shares, and turning them into a :class:`~badblock.config.Config`."""

from __future__ import annotations

import argparse

from badblock.config import Config, load_config


def add_config_arguments(parser: argparse.ArgumentParser, output: bool = True) -> None:
    parser.add_argument("--config", "-c", metavar="FILE|PRESET",
                        help="YAML config file or a shipped preset (demo, vision, mct, mmr); "
                             "default $BADBLOCK_CONFIG")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. train.epochs=3 "
                                                  "(repeatable; beats the environment)")
    if output:
        parser.add_argument("--output", "-o", metavar="DIR",
                            help="output folder (default: run.output, $BADBLOCK_OUTPUT)")


def config_from_args(args: argparse.Namespace, *extra: str) -> Config:
    """Defaults < file < environment < ``--set`` < explicit flags (``extra`` are key=value)."""
    overrides = list(getattr(args, "overrides", []) or [])
    overrides.extend(extra)
    cfg = load_config(getattr(args, "config", None), overrides)
    output = getattr(args, "output", None)
    if output:
        cfg.run.output = str(output)
    return cfg
