"""Typed configuration: defaults < YAML file < environment < ``--set``.

Every section is a dataclass; the whole config is :class:`badblock.config.Config`. Values from
YAML are checked against the dataclass field types; values from the environment and ``--set``
are strings parsed as YAML scalars first (``3`` is an int, ``[1, 2]`` a list, ``null`` None).
All YAML goes through :mod:`badblock.config.safeyaml` (alias bombs, deep nesting and duplicate
keys refused). Unknown keys are errors that name the key and the nearest valid one; so is a
``BADBLOCK_*`` variable that is neither one of :data:`ENV_RESERVED` nor ``<SECTION>__<KEY>``.
Float values must be finite.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from badblock.config import safeyaml
from badblock.config.safeyaml import YamlRefused, short_repr
from badblock.errors import BadInputError

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"
ENV_PREFIX = "BADBLOCK_"
# Environment variables with a meaning of their own, mapped onto config keys.
ENV_SHORTCUTS = {"BADBLOCK_DATA": "run.data", "BADBLOCK_OUTPUT": "run.output"}
# BADBLOCK_* variables that are not config values: read by badblock itself (the config file,
# the container's stage, progress bars), by the Slurm templates and slurm/common.sh (runtime,
# image, repo, python, extra arguments, dry run), by run-docker.sh (image, GPUs, sockets), by
# scripts/setup.sh (venv) and by the test suite (required tools, the local Slurm cluster).
# Any other BADBLOCK_* must be BADBLOCK_<SECTION>__<KEY>: a typo is an error, never ignored.
ENV_RESERVED = frozenset({
    "BADBLOCK_CONFIG", "BADBLOCK_STAGE", "BADBLOCK_PROGRESS",
    "BADBLOCK_RUNTIME", "BADBLOCK_IMAGE", "BADBLOCK_REPO", "BADBLOCK_PYTHON", "BADBLOCK_ARGS",
    "BADBLOCK_SRUN_ARGS", "BADBLOCK_DRY_RUN", "BADBLOCK_GPUS", "BADBLOCK_DOCKER_SOCKET",
    "BADBLOCK_DOCKER_SOCKS", "BADBLOCK_VENV", "BADBLOCK_REQUIRE_SLURM", "BADBLOCK_REQUIRE_TOOLS",
    "BADBLOCK_REQUIRE_MOUNT",
    "BADBLOCK_SLURM_DIR", "BADBLOCK_SLURM_CPUS", "BADBLOCK_SLURM_GPUS", "BADBLOCK_SLURM_DB_PORT",
    "BADBLOCK_REQUIRE_DOCKER", "BADBLOCK_REQUIRE_MOUNTS", "BADBLOCK_DOCKER_DIR",
    "BADBLOCK_DOCKER_CLIENT", "BADBLOCK_DOCKER_ULIMITS", "BADBLOCK_DEBIAN_MIRROR",
})


def presets() -> list[str]:
    """Names of the presets shipped inside the package (``--config demo``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _nearest(name: str, options: Sequence[str]) -> str:
    near = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{near[0]}'?)" if near else f" (valid: {', '.join(sorted(options))})"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it where that is lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, key)
            except BadInputError as exc:
                errors.append(exc.problem)
        raise BadInputError(where, errors[-1] if errors else f"'{key}' may not be null")
    if origin is Literal:
        if value not in args:
            raise BadInputError(where, f"'{key}' must be one of {', '.join(map(repr, args))}, "
                                       f"not {short_repr(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise BadInputError(where, f"'{key}' must be a mapping, not {short_repr(value)}")
        return from_dict(tp, value, where, prefix=key)
    if origin in (list, Sequence, tuple) or tp in (list, tuple):
        if isinstance(value, str) and origin is not tuple:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise BadInputError(where, f"'{key}' must be a list, not {short_repr(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise BadInputError(where, f"'{key}' must have {len(args)} items, not {len(value)}")
            return tuple(_coerce(v, a, where, f"{key}[{i}]") for i, (v, a) in
                         enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise BadInputError(where, f"'{key}' must be a mapping, not {short_repr(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise BadInputError(where, f"'{key}' must be true or false, not {short_repr(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise BadInputError(where, f"'{key}' must be an integer, not {short_repr(value)}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):  # YAML 1.1 reads 5e5 (no dot, no sign) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise BadInputError(where, f"'{key}' must be a number, not {short_repr(value)}")
        try:
            number = float(number)
        except OverflowError:  # an int beyond float range
            number = math.inf
        if not math.isfinite(number):
            # no float key has a use for NaN or inf: they would only poison the run later
            raise BadInputError(where, f"'{key}' must be a finite number, not "
                                       f"{short_repr(value)}")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise BadInputError(where, f"'{key}' must be a string, not {short_repr(value)}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise BadInputError(where, f"'{key}' must be {_type_name(tp)}, not {short_repr(value)}")
    return value


def from_dict(cls: type, data: Mapping[str, Any], where: str = "config", prefix: str = ""):
    """Build dataclass ``cls`` from ``data``; unknown keys raise :class:`BadInputError`."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        full = _clip(f"{prefix}.{key}" if prefix else str(key))
        if key not in fields:
            near = _nearest(full, [f"{prefix}.{f}" if prefix else f for f in fields])
            raise BadInputError(where, f"unknown key '{full}'{near}")
        kwargs[key] = _coerce(value, hints[key], where, full)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise BadInputError(where, f"{prefix or 'config'}: {exc}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """Plain YAML-able data from a config object (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _deep_merge(base: dict, top: Mapping) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node[parts[-1]] = value


def _parse_value(text: str, where: str) -> Any:
    """A value from the environment or ``--set``, read as YAML (a plain string when it is not
    valid YAML); documents :mod:`badblock.config.safeyaml` refuses are errors."""
    if not text.strip():
        return ""
    try:
        return safeyaml.load(text)
    except YamlRefused as exc:
        raise BadInputError(where, f"value refused: {exc.problem}") from None
    except yaml.YAMLError:
        return text


def _dotted(key: str, where: str) -> str:
    if key.count(".") >= safeyaml.MAX_DEPTH:
        raise BadInputError(where, f"key nested deeper than {safeyaml.MAX_DEPTH} levels")
    return key


def _clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[:n] + "..."


def env_names(schema: type) -> list[str]:
    """``BADBLOCK_<SECTION>__<KEY>`` of every key of the config dataclass ``schema``."""
    out = []
    hints = typing.get_type_hints(schema)
    for section in dataclasses.fields(schema):
        tp = hints[section.name]
        if dataclasses.is_dataclass(tp):
            out += [f"{ENV_PREFIX}{section.name.upper()}__{f.name.upper()}"
                    for f in dataclasses.fields(tp)]
    return out


def _check_env_name(var: str, schema: type | None) -> None:
    """A BADBLOCK_* variable that is neither reserved nor ``<SECTION>__<KEY>`` is a typo."""
    if "__" in var[len(ENV_PREFIX):]:
        return  # a config key: from_dict names it if the section or key is unknown
    valid = sorted(ENV_RESERVED | set(ENV_SHORTCUTS) | set(env_names(schema) if schema else ()))
    near = difflib.get_close_matches(_clip(var, 200), valid, n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]}?" if near else ""
    raise BadInputError(f"environment {_clip(var)}", "not a badblock variable: config values "
                        f"are set as BADBLOCK_<SECTION>__<KEY> (two underscores){hint}")


def read_yaml(name_or_path: str | os.PathLike, _seen: tuple = ()) -> dict:
    """Read a config file or a preset name into a dict, following ``base:`` chains."""
    text = os.fspath(name_or_path)
    path = Path(text)
    if not path.is_file() and (PRESET_DIR / f"{text}.yaml").exists():
        path = PRESET_DIR / f"{text}.yaml"
    if not path.is_file():
        raise BadInputError(text, "no such config file or preset"
                                  f"{_nearest(text, presets()) if os.sep not in text else ''}")
    if path.resolve() in _seen:
        raise BadInputError(path, "config 'base:' chain loops back on itself")
    try:
        data = safeyaml.load(path.read_text(encoding="utf-8")) or {}
    except YamlRefused as exc:
        at = f" at line {exc.line}" if exc.line else ""
        raise BadInputError(path, f"YAML refused{at}: {exc.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BadInputError(path, f"not valid YAML{where}: {reason}") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot read config ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise BadInputError(path, "a config file must hold a mapping of sections")
    base = data.pop("base", None)
    if base is not None:
        base_ref = base if (PRESET_DIR / f"{base}.yaml").exists() else path.parent / str(base)
        data = _deep_merge(read_yaml(base_ref, _seen + (path.resolve(),)), data)
    return data


def layered(config: str | os.PathLike | None, overrides: Sequence[str] = (),
            env: Mapping[str, str] | None = None, schema: type | None = None) \
        -> list[tuple[str, dict]]:
    """The config layers above the defaults, lowest first, each with a label for errors.

    ``schema`` (the config dataclass) lets an unknown ``BADBLOCK_*`` variable name its
    nearest valid spelling.
    """
    env = os.environ if env is None else env
    layers: list[tuple[str, dict]] = []
    config = config if config is not None else env.get("BADBLOCK_CONFIG") or None
    if config:
        layers.append((os.fspath(config), read_yaml(config)))
    for var, dotted in ENV_SHORTCUTS.items():
        if env.get(var):
            tree: dict = {}
            _set_path(tree, dotted, env[var])
            layers.append((f"environment {var}", tree))
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in ENV_SHORTCUTS or var in ENV_RESERVED:
            continue
        _check_env_name(var, schema)
        label = f"environment {_clip(var)}"
        dotted = _dotted(var[len(ENV_PREFIX):].lower().replace("__", "."), label)
        tree = {}
        _set_path(tree, dotted, _parse_value(env[var], label))
        layers.append((label, tree))
    for item in overrides:
        if "=" not in item:
            raise BadInputError(f"--set {_clip(item)}", "expected key=value, e.g. train.epochs=3")
        key, _, value = item.partition("=")
        label = f"--set {_clip(key.strip())}"
        tree = {}
        _set_path(tree, _dotted(key.strip(), label), _parse_value(value, label))
        layers.append((label, tree))
    return layers


def build(cls: type, layers: Sequence[tuple[str, dict]]):
    """Apply ``layers`` over the defaults of ``cls``, checking each layer where it comes from."""
    merged: dict = {}
    for label, tree in layers:
        # Validate each layer alone so an error names the file or variable that caused it.
        from_dict(cls, _deep_merge(merged, tree), label)
        merged = _deep_merge(merged, tree)
    return from_dict(cls, merged, layers[-1][0] if layers else "defaults")
