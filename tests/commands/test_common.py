"""Shared command arguments: the config file, --set, flags and --output in their order."""

from __future__ import annotations

import argparse

from badblock.commands.common import add_config_arguments, config_from_args


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_beat_set_which_beats_the_file(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 5}\nmodel: {width: 8}\n")
    monkeypatch.setenv("BADBLOCK_MODEL__WIDTH", "10")
    cfg = config_from_args(_args("-c", str(path), "--set", "train.epochs=6"))
    assert (cfg.train.epochs, cfg.model.width) == (6, 10)
    cfg = config_from_args(_args("-c", str(path), "--set", "train.epochs=6"), "train.epochs=7")
    assert cfg.train.epochs == 7
    assert config_from_args(_args("-o", str(tmp_path / "o"))).run.output == str(tmp_path / "o")


def test_a_preset_by_name():
    assert config_from_args(_args("--config", "vision")).scanner.name == "vision"


def test_without_output_flag_the_config_decides(tmp_path):
    cfg = config_from_args(_args("--set", f"run.output={tmp_path}"))
    assert cfg.run.output == str(tmp_path)
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, output=False)
    assert not hasattr(parser.parse_args([]), "output")
