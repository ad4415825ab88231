"""Footprints: how many LORs of every sinogram bin pass through a crystal or a block.

A bin ``(p, v, e)`` sums the LORs of its view's sub-views ``m`` (transaxial) times the ring
pairs ``(r1, r2)`` of its plane (axial); ``det1``/``r1`` is one end, ``det2``/``r2`` the other
(:mod:`badblock.physics.geometry`). So the number of LORs of the bin with an end on crystal
``d`` of ring ``r`` factorises::

    g[p, v, e] = T1[v, e; d] * A1[p; r] + T2[v, e; d] * A2[p; r]

with ``T1[v, e; d]`` the real sub-views of ``(v, e)`` whose det1 is ``d`` and ``A1[p; r]``
the real ring pairs of plane ``p`` whose r1 is ``r`` (``T2``, ``A2`` the same for the other
end). No LOR has both ends on one crystal, and no preset's sinogram holds an LOR with both ends
in one transaxial block (its bins reach at least 40 crystals across); so a block ``C x R`` (its
crystals times its rings) has the same form with ``T`` summed over ``C`` and ``A`` over ``R``.

Any sum ``sum_bins g * z`` for every candidate at once is then two matrix products: the
transaxial backprojection ``z[p] @ T`` (sparse) and the axial ``A.T @ ...``. The detector uses
such sums with ``g`` and ``g**2`` (the cross term ``2 T1 T2 A1 A2`` included) to score all
crystals and blocks of a scanner in seconds, streaming planes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from scipy import sparse

from badblock.physics.geometry import (
    crystal_is_real,
    plane_ring_pairs,
    ring_is_real,
    transaxial_pairs,
)
from badblock.physics.scanners import Scanner


@dataclass(frozen=True, eq=False)
class Footprint:
    """The factors of ``g`` for one kind of candidate (crystals or blocks).

    ``t1``, ``t2``: sparse ``[view * bin, n_trans]`` (transaxial candidates: crystal indices or
    transaxial blocks); ``a1``, ``a2``: float64 ``[plane, n_axial]`` (rings or axial blocks).
    ``candidate[a, t]`` is the candidate at axial index ``a`` and transaxial index ``t``;
    ``real[a, t]`` is False for virtual gap crystals and rings (never candidates).
    """

    t1: sparse.csr_matrix
    t2: sparse.csr_matrix
    a1: np.ndarray
    a2: np.ndarray
    real: np.ndarray

    @cached_property
    def _squared(self):
        # g**2 = T1^2 A1^2 + T2^2 A2^2 + 2 T1 T2 A1 A2 (elementwise per candidate)
        return ((self.t1.multiply(self.t1).tocsr(), self.a1 ** 2),
                (self.t2.multiply(self.t2).tocsr(), self.a2 ** 2),
                ((2 * self.t1.multiply(self.t2)).tocsr(), self.a1 * self.a2))

    @property
    def shape(self) -> tuple[int, int]:
        """(n_axial, n_trans) of the candidate grid."""
        return self.a1.shape[1], self.t1.shape[1]

    def sums(self, z: np.ndarray, squared: bool = False, chunk: int = 64) -> np.ndarray:
        """``sum over bins of g * z`` (or ``g**2 * z``) for every candidate: float64
        ``[n_axial, n_trans]``. ``z`` is ``[plane, view, bin]`` (e.g. a memory map); it is
        read ``chunk`` planes at a time."""
        terms = self._squared if squared else ((self.t1, self.a1), (self.t2, self.a2))
        n_planes = z.shape[0]
        out = np.zeros(self.shape)
        for p0 in range(0, n_planes, chunk):
            block = np.asarray(z[p0:p0 + chunk], dtype=np.float64).reshape(
                min(chunk, n_planes - p0), -1)
            for t, a in terms:
                out += a[p0:p0 + chunk].T @ np.asarray((t.T @ block.T).T)
        return out


@lru_cache(maxsize=8)
def crystal_footprint(scanner: Scanner) -> Footprint:
    """Footprint factors of every (ring, crystal): candidate grid ``[n_rings, crystals]``."""
    det1, det2, valid = transaxial_pairs(scanner)
    n_views, mash, n_bins = det1.shape
    rows = np.broadcast_to((np.arange(n_views)[:, None, None] * n_bins
                            + np.arange(n_bins)[None, None, :]), det1.shape)
    shape = (n_views * n_bins, scanner.crystals_per_ring)

    def trans(det):
        return sparse.csr_matrix((np.ones(int(valid.sum())), (rows[valid], det[valid])),
                                 shape=shape)  # duplicates (sub-views of one bin) are summed

    a1 = np.zeros((scanner.n_planes, scanner.n_rings))
    a2 = np.zeros_like(a1)
    for p, pairs in enumerate(plane_ring_pairs(scanner)):
        np.add.at(a1[p], pairs[:, 0], 1.0)
        np.add.at(a2[p], pairs[:, 1], 1.0)
    real = ring_is_real(scanner)[:, None] & crystal_is_real(scanner)[None, :]
    return Footprint(trans(det1), trans(det2), a1, a2, real)


@lru_cache(maxsize=8)
def block_footprint(scanner: Scanner) -> Footprint:
    """Footprint factors of every block: candidate grid ``[blocks_axial, blocks_transaxial]``."""
    fp = crystal_footprint(scanner)
    n_t, n_a = scanner.blocks_transaxial, scanner.blocks_axial
    member_t = np.zeros((scanner.crystals_per_ring, n_t))
    for t in range(n_t):
        member_t[list(scanner.block_crystals(t)), t] = 1.0
    member_a = np.zeros((scanner.n_rings, n_a))
    for a in range(n_a):
        member_a[list(scanner.block_rings(a)), a] = 1.0
    mt = sparse.csr_matrix(member_t)
    return Footprint((fp.t1 @ mt).tocsr(), (fp.t2 @ mt).tocsr(), fp.a1 @ member_a,
                     fp.a2 @ member_a, np.ones((n_a, n_t), dtype=bool))

