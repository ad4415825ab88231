"""Axial segments of a 3-D sinogram: which ring differences each one holds, and how many planes.

Shared by the readers (segment tables in headers) and the physics (span compression), so it
lives here, below both. Storage order is Siemens' and STIR's: 0, -1, +1, -2, +2, ...
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    """One axial segment. ``number`` is signed (storage order 0, -1, +1, ...)."""

    number: int
    min_rd: int  # smallest ring difference held (signed, r2 - r1 convention of the producer)
    max_rd: int
    n_planes: int


def storage_numbers(n_segments: int) -> list[int]:
    """Signed segment numbers in storage order: 0, -1, +1, -2, +2, ... (n_segments odd)."""
    out = [0]
    k = 1
    while len(out) < n_segments:
        out += [-k, k]
        k += 1
    return out[:n_segments]


def segment_offsets(segments: list[Segment]) -> np.ndarray:
    """First plane index of each segment in the stored plane axis, plus the total at the end."""
    return np.concatenate([[0], np.cumsum([s.n_planes for s in segments])]).astype(np.int64)


def plane_segment_index(segments: list[Segment]) -> np.ndarray:
    """Index (into ``segments``) of the segment that holds each stored plane: int [n_planes]."""
    return np.repeat(np.arange(len(segments)), [s.n_planes for s in segments])
