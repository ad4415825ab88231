"""Checkpoint files: atomic save, safe load (``weights_only=True``), clear errors.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so that
``torch.load(..., weights_only=True)`` reads it without unpickling arbitrary objects. Training
writes it (:mod:`badblock.train.checkpoint` says what each key holds) and inference reads it
(:mod:`badblock.inference`); this module is the one place that touches the file. A badblock
checkpoint has at least the keys in :data:`REQUIRED_KEYS`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from badblock.errors import BadInputError
from badblock.utils.atomic import atomic_path

REQUIRED_KEYS = ("model", "model_config", "data", "epoch", "step")
FORMAT = "badblock-checkpoint"  # the value of a checkpoint's "format" key


class _Writes:
    """A file object that keeps the OSError of a failed write: torch.save turns it into a
    RuntimeError that no longer says why ("unexpected pos"), a full disk among others."""

    def __init__(self, fh):
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the new one whole.

    A full disk is one :class:`BadInputError` naming ``path`` (temporary removed)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            out = _Writes(fh)
            try:
                torch.save(state, out)
            except RuntimeError:
                if out.error is not None:
                    raise out.error from None
                raise
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
    except Exception as exc:
        # Whatever the unpickler trips over in bytes that are no checkpoint (struct.error on a
        # 4-byte file, KeyError, IndexError, ...) means just that.
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


def _examples(items: list[str], n: int = 2) -> str:
    more = f", ... {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_weights(model: torch.nn.Module, weights, where: str | os.PathLike, hint: str) -> None:
    """``model.load_state_dict(weights)``, or one :class:`BadInputError` line naming ``where``
    that counts what does not fit (missing and unexpected keys, tensors of another shape, with
    two examples each) instead of torch's message of one line per key; ``hint`` is appended."""
    if not isinstance(weights, dict):
        raise BadInputError(where, f"its weights are a {type(weights).__name__}, not a state "
                                   f"dict; {hint}")
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shaped = [f"{k} {list(weights[k].shape)} in the file, {list(own[k].shape)} in the model"
              for k in own if k in weights and hasattr(weights[k], "shape")
              and tuple(weights[k].shape) != tuple(own[k].shape)]
    problems = [f"{len(items)} {what} ({_examples(items)})"
                for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("tensors of another shape", shaped)) if items]
    if not problems:
        try:
            model.load_state_dict(weights)
            return
        except (RuntimeError, TypeError) as exc:
            problems = [(str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()]
    raise BadInputError(where, f"checkpoint does not fit the model: {'; '.join(problems)}; "
                               f"{hint}")


__all__ = ["save_checkpoint", "load_checkpoint", "load_weights", "REQUIRED_KEYS", "FORMAT"]
