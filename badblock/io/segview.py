"""A ``[TOF, plane, view, bin]`` view over data stored view-major within each segment.

STIR's default storage (Segment_View_AxialPos_TangPos) keeps each segment as
``[view, axial, bin]``; with segments of different axial lengths no single set of strides
spans the plane axis, so this class holds one transposed memmap per segment and routes
indexing. Reading a plane or a range of planes touches only those bytes.
"""

from __future__ import annotations

import numpy as np


class SegmentedView:
    """Read-only array-like ``[TOF, plane, view, bin]`` made of per-segment memmap views.

    ``parts`` are arrays ``[TOF, n_planes_s, view, bin]`` in stored plane order. Supports
    ``shape``, ``dtype``, ``ndim``, ``len``, ``np.asarray`` and ``view[t, p]``,
    ``view[t, p0:p1]``, ``view[t]``, ``view[:, p]`` (any index on the last two axes).
    """

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.starts = np.concatenate([[0], np.cumsum([p.shape[1] for p in parts])])
        first = parts[0]
        self.shape = (first.shape[0], int(self.starts[-1]), first.shape[2], first.shape[3])
        self.dtype = first.dtype
        self.ndim = 4
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.nbytes = self.size * self.dtype.itemsize
        self.flags = first.flags  # read-only like the memmaps it wraps

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate([np.asarray(p) for p in self.parts], axis=1)
        return out if dtype is None else out.astype(dtype)

    def _take(self, t, idx: np.ndarray) -> np.ndarray:
        """Planes ``idx`` of TOF index/slice ``t``; plane axis at 0 (int t) or 1 (slice t)."""
        idx = np.where(idx < 0, idx + self.shape[1], idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self.shape[1]):
            raise IndexError(f"plane index out of range 0..{self.shape[1] - 1}")
        axis = 0 if isinstance(t, (int, np.integer)) else 1
        if not step_sorted(idx):
            pieces = [np.expand_dims(self._plane(t, int(p)), axis) for p in idx]
            return np.concatenate(pieces, axis=axis)
        seg = np.searchsorted(self.starts, idx, side="right") - 1
        pieces = []
        for s in np.unique(seg):
            local = idx[seg == s] - self.starts[s]
            part = self.parts[s][t]
            pieces.append(np.asarray(part[local] if axis == 0 else part[:, local]))
        if not pieces:
            shape = list(self.parts[0][t].shape)
            shape[axis] = 0
            return np.empty(shape, self.dtype)
        return np.concatenate(pieces, axis=axis)

    def _plane(self, t, p: int):
        if p < 0:
            p += self.shape[1]
        if not 0 <= p < self.shape[1]:
            raise IndexError(f"plane {p} out of range 0..{self.shape[1] - 1}")
        s = int(np.searchsorted(self.starts, p, side="right") - 1)
        part = self.parts[s][t]
        return part[p - self.starts[s]] if isinstance(t, (int, np.integer)) \
            else part[:, p - self.starts[s]]

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            if key[-1] is not Ellipsis or sum(k is Ellipsis for k in key) > 1:
                raise IndexError("SegmentedView supports a trailing Ellipsis only")
            key = key[:-1]
        if len(key) > 4:
            raise IndexError("too many indices for [TOF, plane, view, bin]")
        t = key[0] if len(key) > 0 else slice(None)
        p = key[1] if len(key) > 1 else slice(None)
        rest = tuple(key[2:])
        if isinstance(t, np.integer):
            t = int(t)
        if not isinstance(t, (int, slice)):
            raise IndexError("SegmentedView: TOF index must be an integer or a slice")
        if isinstance(p, (int, np.integer)):
            out = np.asarray(self._plane(t, int(p)))
        elif isinstance(p, slice):
            out = self._take(t, np.arange(*p.indices(self.shape[1])))
        else:
            out = self._take(t, np.asarray(p, dtype=np.int64).ravel())
        if rest:
            out = out[(Ellipsis, *rest, *([slice(None)] * (2 - len(rest))))]
        return out


def step_sorted(idx: np.ndarray) -> bool:
    return idx.size < 2 or bool(np.all(np.diff(idx) > 0))
