"""Training checkpoints: atomic save, safe load (``weights_only=True``), RNG state capture.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so that
``torch.load(..., weights_only=True)`` can read it without unpickling arbitrary objects. Keys:
``model``, ``model_config``, ``data`` (context, normalise, mask_channel, pad multiple, ...),
``optimizer``, ``schedule``, ``epoch``, ``step``, ``rng``, ``metrics``.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from badblock.errors import BadInputError
from badblock.utils.atomic import atomic_path

REQUIRED_KEYS = ("model", "model_config", "data", "epoch", "step")


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the new one whole."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``.

    A missing, truncated or foreign file raises :class:`BadInputError` naming the file, so the
    CLI prints one line and exits with code 2 instead of a torch traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "no such checkpoint file")
    if path.stat().st_size == 0:
        raise BadInputError(path, "checkpoint is empty (0 bytes): truncated by an interrupted "
                                  "copy?")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError,
            OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            problem = "holds pickled Python objects, refusing to load it (weights_only=True)"
        else:
            problem = f"truncated or not a torch checkpoint ({first[:160]})"
        raise BadInputError(path, problem) from None
    if not isinstance(state, dict):
        raise BadInputError(path, "not a badblock checkpoint (not a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise BadInputError(path, f"not a badblock checkpoint (missing {', '.join(missing)})")
    return state


def capture_rng(generators: dict[str, torch.Generator] | None = None,
                numpy_rng: np.random.Generator | None = None) -> dict:
    """RNG states of python, numpy, torch (CPU and CUDA) and the given generators."""
    state = {
        "python": random.getstate(),
        "numpy_legacy": _np_legacy_state(),
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    if numpy_rng is not None:
        state["numpy"] = numpy_rng.bit_generator.state
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generators: dict[str, torch.Generator] | None = None,
                numpy_rng: np.random.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng`; generators missing from ``state`` are left as they are."""
    random.setstate(_as_tuple(state["python"]))
    legacy = state.get("numpy_legacy")
    if legacy is not None:
        np.random.set_state((legacy["kind"], legacy["key"].numpy().astype(np.uint32),
                             int(legacy["pos"]), int(legacy["has_gauss"]),
                             float(legacy["cached"])))
    torch.set_rng_state(state["torch"])
    for name, g in (generators or {}).items():
        if name in state.get("generators", {}):
            g.set_state(state["generators"][name].to("cpu"))
    if numpy_rng is not None and "numpy" in state:
        numpy_rng.bit_generator.state = state["numpy"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _np_legacy_state() -> dict:
    # numpy's legacy state holds an ndarray, which weights_only cannot load: store a tensor.
    kind, key, pos, has_gauss, cached = np.random.get_state()
    return {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _as_tuple(obj):
    if isinstance(obj, list):
        return tuple(_as_tuple(o) for o in obj)
    if isinstance(obj, tuple):
        return tuple(_as_tuple(o) for o in obj)
    return obj
