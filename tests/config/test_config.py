import subprocess
import sys

import pytest
import yaml

from badblock.config import Config, load_config, presets, save_resolved
from badblock.errors import BadInputError


def test_defaults_load():
    cfg = load_config(None, [], env={})
    assert isinstance(cfg, Config)
    assert cfg.data.context == 2


def test_precedence_file_env_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 5\nmodel:\n  width: 8\n")
    env = {"BADBLOCK_TRAIN__EPOCHS": "7", "BADBLOCK_OUTPUT": str(tmp_path / "out")}
    cfg = load_config(path, ["model.width=12"], env=env)
    assert cfg.train.epochs == 7  # env beats file
    assert cfg.model.width == 12  # --set beats file
    assert cfg.run.output == str(tmp_path / "out")
    cfg = load_config(path, ["train.epochs=9"], env=env)
    assert cfg.train.epochs == 9  # --set beats env


def test_config_from_env_variable(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 4}\n")
    assert load_config(None, [], env={"BADBLOCK_CONFIG": str(path)}).train.epochs == 4


@pytest.mark.parametrize("layer", ["file", "env", "set"])
def test_typo_names_nearest_key(tmp_path, layer):
    path = tmp_path / "c.yaml"
    env, sets, cfgfile = {}, [], None
    if layer == "file":
        path.write_text("train:\n  epohcs: 5\n")
        cfgfile = path
    elif layer == "env":
        env = {"BADBLOCK_TRAIN__EPOHCS": "5"}
    else:
        sets = ["train.epohcs=5"]
    with pytest.raises(BadInputError) as info:
        load_config(cfgfile, sets, env=env)
    assert "train.epohcs" in str(info.value)
    assert "train.epochs" in str(info.value)


def test_unknown_section_and_bad_type(tmp_path):
    with pytest.raises(BadInputError, match="did you mean 'train'"):
        load_config(None, ["trian.epochs=3"], env={})
    with pytest.raises(BadInputError, match="must be an integer"):
        load_config(None, ["train.epochs=many"], env={})
    with pytest.raises(BadInputError, match="must be one of"):
        load_config(None, ["model.norm=bach"], env={})


def test_bad_yaml_names_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(BadInputError) as info:
        load_config(path, [], env={})
    assert str(path) in str(info.value)


def test_presets_and_base_chain(tmp_path):
    assert "demo" in presets()
    path = tmp_path / "mine.yaml"
    path.write_text("base: demo\ntrain:\n  epochs: 2\n")
    cfg = load_config(path, [], env={})
    demo = load_config("demo", [], env={})
    assert cfg.train.epochs == 2
    assert cfg.scanner.name == demo.scanner.name


def test_resolved_roundtrip(tmp_path):
    cfg = load_config(None, ["train.epochs=3", "loss.terms={l1: 1.0, msssim: 0.5}"], env={})
    path = save_resolved(cfg, tmp_path)
    again = load_config(path, [], env={})
    assert again == cfg
    assert yaml.safe_load(path.read_text())["train"]["epochs"] == 3


def test_cli_help_and_bad_config_exit_code(tmp_path):
    out = subprocess.run([sys.executable, "-m", "badblock", "--help"], capture_output=True,
                         text=True, check=True)
    assert "badblock" in out.stdout


def test_float_in_exponent_form_and_preset_beside_a_folder(tmp_path, monkeypatch):
    assert load_config(None, ["simulate.counts=5e5"], env={}).simulate.counts == 5e5
    (tmp_path / "demo").mkdir()  # a folder named like a preset must not shadow it
    monkeypatch.chdir(tmp_path)
    assert load_config("demo", [], env={}).scanner.name == "mini"
