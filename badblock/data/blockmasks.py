"""Dead-block masks of sets of blocks, built per training sample from small exact factors.

A set ``D`` of dead blocks ``(T, A)`` (transaxial block ``T``, axial block ``A``) loses the LOR
``(d1, r1)-(d2, r2)`` when ``(tau(d1), alpha(r1))`` or ``(tau(d2), alpha(r2))`` is in ``D``,
with ``tau(d)`` the transaxial block of crystal ``d`` and ``alpha(r)`` the axial block of ring
``r`` (or neither, for gap crystals and rings and blocks outside the set). Label each crystal by
its block among the set's transaxial blocks (``n_t`` labels, plus one for "other") and each
ring likewise (``n_a + 1`` labels); whether a LOR is lost depends only on the four labels of its
ends. So the lost share of bin ``(p, v, b)`` is

    f[p, v, b] = sum_{a, b', c, d} L[a, c, b', d] * H[a, b'][v, b] * R[c, d][p]

with ``H[a, b']`` the share of the bin's real sub-LORs whose det1 / det2 carry transaxial
labels ``a`` / ``b'``, ``R[c, d]`` the share of plane p's real ring pairs whose r1 / r2 carry
axial labels ``c`` / ``d``, and ``L`` = 1 when ``(a, c)`` or ``(b', d)`` is a dead block. This is
:func:`badblock.physics.mask.dead_block_mask` regrouped (the tests compare the two), at a cost of
a few planes per sample instead of a whole ``[plane, view, bin]`` mask per set.

:class:`BlockSampler` draws the sets of a training run: 1 to 3 blocks by default, each block
after the first adjacent to one already drawn (transaxially around the ring or axially) with
probability ``adjacent``, every block position of ``blocks`` possible.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from badblock.errors import BadInputError


class BlockSetMask:
    """The mask of one set of dead blocks, ``[plane, view, bin]``, evaluated for the planes
    asked for (``mask[planes]`` -> float32 ``[n, view, bin]``); ``planes``: affected planes."""

    def __init__(self, lost: np.ndarray, trans: np.ndarray, axial: np.ndarray, shape):
        # G[a, b, p] = sum_cd L[a, c, b, d] R[c, d, p]: one small table per set
        self._g = np.einsum("acbd,cdp->abp", lost, axial, optimize=True).astype(np.float32)
        self._trans = trans  # [nt, nt, view, bin]
        self.shape = tuple(shape)
        hit = np.einsum("abp,ab->p", self._g, (trans.reshape(trans.shape[:2] + (-1,)) > 0)
                        .any(axis=2).astype(np.float32))
        self.planes = np.flatnonzero(hit > 0).astype(np.int64)

    def __getitem__(self, planes) -> np.ndarray:
        planes = np.atleast_1d(np.asarray(planes, np.int64))
        g = self._g[:, :, planes]  # [nt, nt, n]
        out = np.tensordot(g.transpose(2, 0, 1), self._trans, axes=2)  # [n, view, bin]
        return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


class BlockSetMasks:
    """Builds :class:`BlockSetMask` objects for any set of blocks of ``scanner`` (cached)."""

    def __init__(self, scanner, cache: int = 256):
        from badblock.physics.geometry import ring_is_real, ring_pair_plane, transaxial_pairs

        self.scanner = scanner
        self.shape = (scanner.n_planes, scanner.n_views, scanner.n_bins)
        det1, det2, valid = transaxial_pairs(scanner)  # [view, mash, bin]
        pitch, per = scanner.block_pitch, scanner.crystals_per_block
        self._tb1 = np.where(det1 % pitch < per, det1 // pitch, -1)
        self._tb2 = np.where(det2 % pitch < per, det2 // pitch, -1)
        self._valid = valid
        n_sub = valid.sum(axis=1).astype(np.float64)
        self._inv_sub = np.divide(1.0, n_sub, out=np.zeros_like(n_sub), where=n_sub > 0)
        table = ring_pair_plane(scanner)
        real = ring_is_real(scanner)
        r1, r2 = np.nonzero((table >= 0) & real[:, None] & real[None, :])
        self._plane = table[r1, r2]
        rp, rper = scanner.ring_pitch, scanner.rings_per_block
        self._ab1 = np.where(r1 % rp < rper, r1 // rp, -1)
        self._ab2 = np.where(r2 % rp < rper, r2 // rp, -1)
        pairs = np.bincount(self._plane, minlength=scanner.n_planes).astype(np.float64)
        self._inv_pairs = np.divide(1.0, pairs, out=np.zeros_like(pairs), where=pairs > 0)
        self._cache: OrderedDict = OrderedDict()
        self._size = int(cache)

    @staticmethod
    def _labels(end1: np.ndarray, end2: np.ndarray, chosen: tuple[int, ...]):
        """Each end's label: its index in ``chosen``, or ``len(chosen)`` ("other")."""
        n = len(chosen)
        lab1, lab2 = np.full(end1.shape, n), np.full(end2.shape, n)
        for i, v in enumerate(chosen):
            lab1[end1 == v] = i
            lab2[end2 == v] = i
        return n + 1, lab1, lab2

    def _trans(self, ts: tuple[int, ...]) -> np.ndarray:
        n, lab1, lab2 = self._labels(self._tb1, self._tb2, ts)
        out = np.zeros((n, n) + self.shape[1:], np.float32)
        for a in range(n):
            for b in range(n):
                hit = self._valid & (lab1 == a) & (lab2 == b)
                if hit.any():
                    out[a, b] = hit.sum(axis=1) * self._inv_sub
        return out

    def _axial(self, axs: tuple[int, ...]) -> np.ndarray:
        n, lab1, lab2 = self._labels(self._ab1, self._ab2, axs)
        out = np.zeros((n, n, self.shape[0]))
        for c in range(n):
            for d in range(n):
                sel = (lab1 == c) & (lab2 == d)
                out[c, d] = np.bincount(self._plane[sel], minlength=self.shape[0])
        return out * self._inv_pairs

    def get(self, blocks: Sequence[tuple[int, int]]) -> BlockSetMask:
        """The mask of the set ``blocks`` (``(transaxial, axial)`` pairs; order is ignored)."""
        key = tuple(sorted({(int(t), int(a)) for t, a in blocks}))
        if not key:
            raise BadInputError("dead blocks", "an empty set of dead blocks")
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        for t, a in key:
            self.scanner.block_crystals(t)  # range checks with a clear error
            self.scanner.block_rings(a)
        ts = tuple(sorted({t for t, _ in key}))
        axs = tuple(sorted({a for _, a in key}))
        nt, na = len(ts) + 1, len(axs) + 1
        lost = np.zeros((nt, na, nt, na), np.float64)
        dead = {(ts.index(t), axs.index(a)) for t, a in key}
        for a in range(nt):
            for c in range(na):
                for b in range(nt):
                    for d in range(na):
                        lost[a, c, b, d] = (a, c) in dead or (b, d) in dead
        mask = BlockSetMask(lost, self._trans(ts), self._axial(axs), self.shape)
        self._cache[key] = mask
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return mask

    def check(self, blocks: Sequence[tuple[int, int]], atol: float = 1e-5) -> None:
        """Compare the set ``blocks`` with ``physics.dead_block_mask`` (raises on a mismatch)."""
        from badblock.physics.mask import dead_block_mask

        ref = dead_block_mask(self.scanner, list(blocks))
        got = self.get(blocks)[np.arange(self.shape[0])]
        err = float(np.abs(got - ref).max())
        if err > atol:
            raise AssertionError(f"factorised mask of blocks {list(blocks)} differs from "
                                 f"dead_block_mask by {err:g}")


class BlockSampler:
    """Draws a set of dead blocks per training sample (see the module docstring).

    ``blocks``: the allowed positions ``(transaxial, axial)``; ``count``: ``(min, max)`` blocks
    per set; ``adjacent``: probability that each further block neighbours one already drawn
    (when such an allowed, unused neighbour exists).
    """

    def __init__(self, scanner, blocks: Sequence[tuple[int, int]],
                 count: Sequence[int] = (1, 3), adjacent: float = 0.7):
        if not blocks:
            raise BadInputError("data.train_blocks", "no dead blocks to train with")
        lo, hi = (int(v) for v in count)
        if not 1 <= lo <= hi:
            raise BadInputError("data.blocks_per_sample", f"needs 1 <= min <= max, got "
                                                          f"{list(count)}")
        if hi > len(set(blocks)):
            raise BadInputError("data.blocks_per_sample", f"{hi} blocks per sample but only "
                                f"{len(set(blocks))} allowed positions (data.train_blocks)")
        if not 0.0 <= adjacent <= 1.0:
            raise BadInputError("data.adjacent", f"must be a probability, got {adjacent}")
        self.scanner = scanner
        self.blocks = sorted({(int(t), int(a)) for t, a in blocks})
        self._allowed = set(self.blocks)
        self.count = (lo, hi)
        self.adjacent = float(adjacent)
        self.masks = BlockSetMasks(scanner)

    def neighbours(self, block: tuple[int, int]) -> list[tuple[int, int]]:
        """Allowed blocks next to ``block``: transaxially around the ring, axially within it."""
        t, a = block
        n_t, n_a = self.scanner.blocks_transaxial, self.scanner.blocks_axial
        cand = [((t - 1) % n_t, a), ((t + 1) % n_t, a)]
        cand += [(t, a + d) for d in (-1, 1) if 0 <= a + d < n_a]
        return [c for c in cand if c in self._allowed]

    def draw(self, rng: np.random.Generator) -> tuple[tuple[int, int], ...]:
        """One set of dead blocks, sorted."""
        lo, hi = self.count
        n = int(rng.integers(lo, hi + 1))
        chosen = [self.blocks[int(rng.integers(len(self.blocks)))]]
        while len(chosen) < n:
            near = sorted({c for b in chosen for c in self.neighbours(b)} - set(chosen))
            if near and rng.random() < self.adjacent:
                chosen.append(near[int(rng.integers(len(near)))])
            else:
                rest = [b for b in self.blocks if b not in chosen]
                chosen.append(rest[int(rng.integers(len(rest)))])
        return tuple(sorted(chosen))

    def mask(self, rng: np.random.Generator) -> BlockSetMask:
        """The mask of a freshly drawn set."""
        return self.masks.get(self.draw(rng))


__all__ = ["BlockSetMask", "BlockSetMasks", "BlockSampler"]
