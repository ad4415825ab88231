"""RNG state capture and restore, so that a resumed run draws what an uninterrupted one would.

The states go into the checkpoint dict (its ``rng`` key) as tensors, numbers and tuples only, so
that the file still loads with ``weights_only=True`` (:mod:`badblock.utils.checkpoint`).
"""

from __future__ import annotations

import random

import numpy as np
import torch


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
