"""How scan files are named: a scan's id, and the noiseless truth stored beside a simulated scan.

A scan ``DIR/scan_000.hs`` (with its data file ``DIR/scan_000.s``) has the id ``scan_000`` (the
file name up to its first dot). A simulated scan's noiseless expectation sits beside it as
``DIR/scan_000.truth.hs`` (+ its data file), float32, same shape: ``<stem>.truth.<ext>`` for a
header ``<stem>.<ext>`` (``X.truth.s.hdr`` for ``X.s.hdr``). preprocess and evaluate pick up
such a sibling automatically. Its attenuation map (what the model-based fill needs) is
``DIR/scan_000.mu.npy``. Input searches leave truth files and attenuation maps out.
"""

from __future__ import annotations

from pathlib import Path

MU_SUFFIX = ".mu.npy"


def is_sidecar_name(path: Path) -> bool:
    """Whether ``path`` names a sidecar of a scan, not a scan: a truth (``X.truth.hs``,
    ``X.truth``) or an attenuation map (``X.mu.npy``)."""
    return ".truth." in path.name or path.name.endswith((".truth", MU_SUFFIX))


def mu_sibling(path: Path) -> Path | None:
    """``DIR/<scan id>.mu.npy`` beside the scan file ``path``, if it exists."""
    cand = Path(path).with_name(scan_id(Path(path)) + MU_SUFFIX)
    return cand if cand.is_file() else None


def truth_sibling(path: Path) -> Path | None:
    """``X.truth.hs`` for ``X.hs`` (also ``X.truth.s.hdr`` for ``X.s.hdr``), if it exists."""
    name = path.name
    stem, dot, rest = name.partition(".")
    candidates = [path.with_name(f"{stem}.truth.{rest}")] if dot else []
    candidates.append(path.with_name(f"{path.stem}.truth{path.suffix}"))
    candidates.append(path.with_name(f"{name}.truth"))
    for c in candidates:
        if c.exists() and c != path:
            return c
    return None


def scan_id(path: Path) -> str:
    """The id of the scan in ``path``: its file name up to the first dot (``scan_000``)."""
    return path.name.partition(".")[0] or path.name


__all__ = ["is_sidecar_name", "truth_sibling", "scan_id", "mu_sibling", "MU_SUFFIX"]
