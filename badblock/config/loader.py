"""Typed configuration: defaults < YAML file < environment < ``--set``.

Every section is a dataclass; the whole config is :class:`badblock.config.Config`. Values from
YAML are checked against the dataclass field types; values from the environment and ``--set``
are strings parsed as YAML scalars first (``3`` is an int, ``[1, 2]`` a list, ``null`` None).
Unknown keys are errors that name the key and the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from badblock.errors import BadInputError

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"
ENV_PREFIX = "BADBLOCK_"
# Environment variables with a meaning of their own (SPEC §3), mapped onto config keys.
ENV_SHORTCUTS = {"BADBLOCK_DATA": "run.data", "BADBLOCK_OUTPUT": "run.output"}
ENV_RESERVED = {"BADBLOCK_CONFIG", "BADBLOCK_STAGE", "BADBLOCK_PROGRESS"}


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
                                       f"not {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise BadInputError(where, f"'{key}' must be a mapping, not {value!r}")
        return from_dict(tp, value, where, prefix=key)
    if origin in (list, Sequence, tuple) or tp in (list, tuple):
        if isinstance(value, str) and origin is not tuple:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise BadInputError(where, f"'{key}' must be a list, not {value!r}")
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
            raise BadInputError(where, f"'{key}' must be a mapping, not {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise BadInputError(where, f"'{key}' must be true or false, not {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise BadInputError(where, f"'{key}' must be an integer, not {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 5e5 (no dot, no sign) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise BadInputError(where, f"'{key}' must be a number, not {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise BadInputError(where, f"'{key}' must be a string, not {value!r}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise BadInputError(where, f"'{key}' must be {_type_name(tp)}, not {value!r}")
    return value


def from_dict(cls: type, data: Mapping[str, Any], where: str = "config", prefix: str = ""):
    """Build dataclass ``cls`` from ``data``; unknown keys raise :class:`BadInputError`."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
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


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


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
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
            env: Mapping[str, str] | None = None) -> list[tuple[str, dict]]:
    """The config layers above the defaults, lowest first, each with a label for errors."""
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
        if "__" not in var[len(ENV_PREFIX):]:
            continue
        dotted = var[len(ENV_PREFIX):].lower().replace("__", ".")
        tree = {}
        _set_path(tree, dotted, _parse_scalar(env[var]))
        layers.append((f"environment {var}", tree))
    for item in overrides:
        if "=" not in item:
            raise BadInputError(f"--set {item}", "expected key=value, e.g. train.epochs=3")
        key, _, value = item.partition("=")
        tree = {}
        _set_path(tree, key.strip(), _parse_scalar(value))
        layers.append((f"--set {key.strip()}", tree))
    return layers


def build(cls: type, layers: Sequence[tuple[str, dict]]):
    """Apply ``layers`` over the defaults of ``cls``, checking each layer where it comes from."""
    merged: dict = {}
    for label, tree in layers:
        # Validate each layer alone so an error names the file or variable that caused it.
        from_dict(cls, _deep_merge(merged, tree), label)
        merged = _deep_merge(merged, tree)
    return from_dict(cls, merged, layers[-1][0] if layers else "defaults")
