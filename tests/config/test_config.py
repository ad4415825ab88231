import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from badblock.config import Config, load_config, presets, save_resolved
from badblock.errors import BadInputError

ROOT = Path(__file__).resolve().parents[2]


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


def badblock(*args, cwd, env=None, timeout=120):
    """Run the real CLI with a clean environment plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("BADBLOCK_")}
    full.update(BADBLOCK_PROGRESS="0", PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "badblock", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(proc, *needles):
    """Exit 2 with exactly one line on stderr holding every needle."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


SIM = ["--set", "simulate.scans=1", "--set", "simulate.step_mm=9",
       "--set", "simulate.counts=20000"]


def test_cli_help_and_bad_config_exit_code(tmp_path):
    out = subprocess.run([sys.executable, "-m", "badblock", "--help"], capture_output=True,
                         text=True, check=True)
    assert "badblock" in out.stdout
    # the same real stage runs with a good config and stops with one line on a bad one
    good = tmp_path / "good.yaml"
    good.write_text("scanner:\n  name: mini\nsimulate:\n  seed: 3\n")
    proc = badblock("simulate", "--config", str(good), *SIM, "-o", str(tmp_path / "ok"),
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ok" / "scan_000.hs").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("scanner:\n  name: mini\nsimulate:\n  sede: 3\n")
    proc = badblock("simulate", "--config", str(bad), *SIM, "-o", str(tmp_path / "no"),
                    cwd=tmp_path)
    one_line_error(proc, str(bad), "simulate.sede", "simulate.seed")
    assert not (tmp_path / "no").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".no")]  # no temp folder


def bomb(levels: int = 9) -> str:
    """A flow-style "billion laughs": 9 anchors, each listing the previous one 9 times."""
    parts = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        parts.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "{" + ", ".join(parts) + "}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layer", ["file", "set", "env"])
def test_alias_bomb_refused_at_once(tmp_path, layer):
    # Before: the 9^9-item value was expanded into the "must be an integer, not ..." message.
    args, env = ["mask", "-o", str(tmp_path / "m.npy")], {}
    if layer == "file":
        path = tmp_path / "bomb.yaml"
        path.write_text(f"train:\n  epochs: {bomb()}\n")
        args += ["--config", str(path)]
        where = str(path)
    elif layer == "set":
        args += ["--set", f"train.epochs={bomb()}"]
        where = "--set train.epochs"
    else:
        env = {"BADBLOCK_TRAIN__EPOCHS": bomb()}
        where = "environment BADBLOCK_TRAIN__EPOCHS"
    proc = badblock(*args, cwd=tmp_path, env=env, timeout=45)
    line = one_line_error(proc, where, "alias")
    assert len(line) < 300 and "lol" not in line


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layer", ["file", "set"])
def test_deep_nesting_is_one_line(tmp_path, layer):
    deep = "[" * 20000 + "]" * 20000
    args = ["mask", "-o", str(tmp_path / "m.npy")]
    if layer == "file":
        path = tmp_path / "deep.yaml"
        path.write_text(f"train:\n  epochs: {deep}\n")
        args += ["--config", str(path)]
    else:
        args += ["--set", f"train.epochs={deep}"]
    one_line_error(badblock(*args, cwd=tmp_path, timeout=45), "nested deeper than")


def test_duplicate_key_names_file_key_and_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  epochs: 3\n  ema: 0.5\n  epochs: 4\n")
    one_line_error(badblock("mask", "--config", str(path), cwd=tmp_path),
                   str(path), "duplicate key 'epochs'", "line 2", "line 4")


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", "1e999", "nan"])
def test_non_finite_float_refused(tmp_path, value):
    proc = badblock("mask", "--set", f"optim.lr={value}", cwd=tmp_path)
    one_line_error(proc, "optim.lr", "finite")


def test_env_typo_names_variable_and_nearest(tmp_path):
    proc = badblock("mask", "-o", str(tmp_path / "m.npy"), cwd=tmp_path,
                    env={"BADBLOCK_TRAIN_EPOCHS": "3"})
    one_line_error(proc, "BADBLOCK_TRAIN_EPOCHS", "did you mean BADBLOCK_TRAIN__EPOCHS")
    proc = badblock("mask", "-o", str(tmp_path / "m.npy"), cwd=tmp_path,
                    env={"BADBLOCK_OUTPT": str(tmp_path)})
    one_line_error(proc, "BADBLOCK_OUTPT", "did you mean BADBLOCK_OUTPUT")
    assert not (tmp_path / "m.npy").exists()


def test_every_variable_the_repo_uses_is_accepted():
    # The names the scripts, Slurm templates, docker files and tests use (a new one must be
    # added to loader.ENV_RESERVED or be a config key, or every stage would refuse it).
    names = set()
    for sub in ("slurm", "docker", "scripts", "tests", "bench", ".ci"):
        for path in (ROOT / sub).rglob("*"):
            if path.is_file() and path.suffix in ("", ".sh", ".sbatch", ".py", ".yaml") \
                    and path.name != Path(__file__).name:  # this file spells typos on purpose
                names |= set(re.findall(r"BADBLOCK_[A-Z0-9_]*[A-Z0-9]", path.read_text(
                    errors="replace")))
    for name in ("run-docker.sh", "Dockerfile"):
        names |= set(re.findall(r"BADBLOCK_[A-Z0-9_]*[A-Z0-9]", (ROOT / name).read_text()))
    names = {n for n in names if "__" not in n and n not in ("BADBLOCK_DATA", "BADBLOCK_CONFIG",
                                                             "BADBLOCK_OUTPUT")}
    assert {"BADBLOCK_RUNTIME", "BADBLOCK_REQUIRE_SLURM", "BADBLOCK_STAGE"} <= names
    load_config(None, [], env={n: "1" for n in names})


def test_anchors_within_limits_still_work(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("scanner:\n  dead_blocks: &b ['3:1', '4:1']\n"
                    "simulate:\n  dead_blocks: *b\n")
    cfg = load_config(path, [], env={})
    assert cfg.simulate.dead_blocks == ["3:1", "4:1"]
    with pytest.raises(BadInputError, match="recursive"):
        load_config(None, ["scanner.dead_blocks=&a [*a]"], env={})
    with pytest.raises(BadInputError, match="4300 digits|cannot be read"):
        load_config(None, ["train.epochs=" + "9" * 5000], env={})
    with pytest.raises(BadInputError, match="finite"):
        load_config(None, ["optim.lr=" + "9" * 400], env={})  # an int beyond float range


def test_float_in_exponent_form_and_preset_beside_a_folder(tmp_path, monkeypatch):
    assert load_config(None, ["simulate.counts=5e5"], env={}).simulate.counts == 5e5
    (tmp_path / "demo").mkdir()  # a folder named like a preset must not shadow it
    monkeypatch.chdir(tmp_path)
    assert load_config("demo", [], env={}).scanner.name == "mini"
