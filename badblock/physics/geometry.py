"""Detector pairs <-> sinogram bins: which crystals and rings every (plane, view, bin) sums.

Transaxial convention (Siemens, as the public converter ``oTableVision600``): with ``N``
crystals per ring, element ``e`` in 0..n_bins-1, view ``v``, sub-view ``m`` in 0..mash-1 and
``c = mash*v + m``::

    det1 = (c + e//2 - off) mod N
    det2 = (c + N/2 - (e+1)//2 + off) mod N        off = n_bins / 4 (130 for the Vision)

so bin ``e = n_bins/2`` passes through the centre. Sub-views ``c >= N/2`` would repeat the
sub-views ``c - N/2`` with det1 and det2 swapped; they are not LORs of this sinogram (the
Vision's last view holds 7 of its 8 sub-views: 50 x 8 = 400 > 399).

Axial convention: ring difference ``rd = r2 - r1`` where ``r1`` is the ring of det1 and
``r2`` the ring of det2. Segment ``k`` holds ``rd`` in ``[span*k - span//2, span*k + span//2]``
(capped at +-max_ring_diff), so segment +k has positive differences. Within a segment, planes
are ordered by ``r1 + r2``.

A pair is a real LOR when both crystals are real (not the virtual gap crystal of a block), both
rings are real (not a virtual gap ring) and the sub-view is one of the first N/2.

Arrays returned by the cached functions here are read-only; copy them before changing them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from badblock.io.segments import segment_offsets
from badblock.physics.scanners import Scanner


def crystal_is_real(scanner: Scanner) -> np.ndarray:
    """bool ``[crystals_per_ring]``: False for the virtual gap crystal(s) after each block."""
    return np.arange(scanner.crystals_per_ring) % scanner.block_pitch < scanner.crystals_per_block


def ring_is_real(scanner: Scanner) -> np.ndarray:
    """bool ``[n_rings]``: False for virtual gap rings between axial blocks (the mCT's)."""
    return np.arange(scanner.n_rings) % scanner.ring_pitch < scanner.rings_per_block


def _frozen(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays if len(arrays) > 1 else arrays[0]


@lru_cache(maxsize=16)
def transaxial_pairs(scanner: Scanner) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crystal pairs of every (view, sub-view, bin): ``det1, det2`` int64 and ``valid`` bool,
    each ``[view, mash, bin]``. ``valid`` marks real LORs (both crystals real, sub-view < N/2).
    """
    n = scanner.crystals_per_ring
    off = scanner.radial_offset
    c = (scanner.mash * np.arange(scanner.n_views)[:, None] + np.arange(scanner.mash))[..., None]
    e = np.arange(scanner.n_bins)
    det1 = (c + e // 2 - off) % n
    det2 = (c + n // 2 - (e + 1) // 2 + off) % n
    real = crystal_is_real(scanner)
    valid = real[det1] & real[det2] & (c < scanner.n_subviews)
    return _frozen(det1, det2, valid)


@lru_cache(maxsize=16)
def transaxial_lookup(scanner: Scanner) -> np.ndarray:
    """int64 ``[N, N]``: ``c * n_bins + e`` at ``[det1, det2]`` of every sub-view c < N/2 and
    bin e (ordered: ``[det2, det1]`` stays -1), -1 for pairs the sinogram does not hold."""
    n = scanner.crystals_per_ring
    det1, det2, _ = transaxial_pairs(scanner)
    keep = (scanner.mash * np.arange(scanner.n_views)[:, None]
            + np.arange(scanner.mash))[..., None] < scanner.n_subviews
    keep = np.broadcast_to(keep, det1.shape)
    code = np.arange(det1.size).reshape(det1.shape)  # == c * n_bins + e
    table = np.full((n, n), -1, dtype=np.int64)
    table[det1[keep], det2[keep]] = code[keep]
    return _frozen(table)


@lru_cache(maxsize=16)
def ring_pair_plane(scanner: Scanner) -> np.ndarray:
    """int64 ``[n_rings, n_rings]``: stored plane index of ring pair ``(r1, r2)``, -1 beyond the
    max ring difference. ``r1`` is det1's ring, ``r2`` det2's (see the module docstring)."""
    nr = scanner.n_rings
    r1, r2 = np.meshgrid(np.arange(nr), np.arange(nr), indexing="ij")
    rd, total = r2 - r1, r1 + r2
    out = np.full((nr, nr), -1, dtype=np.int64)
    offsets = segment_offsets(scanner.segments)
    for seg, start in zip(scanner.segments, offsets[:-1]):
        inside = (rd >= seg.min_rd) & (rd <= seg.max_rd)
        sums = np.unique(total[inside])
        if len(sums) != seg.n_planes:
            raise AssertionError(f"segment {seg.number}: {len(sums)} sums, {seg.n_planes} planes")
        out[inside] = start + np.searchsorted(sums, total[inside])
    return _frozen(out)


def plane_ring_pairs(scanner: Scanner, real_only: bool = True) -> list[np.ndarray]:
    """Per stored plane, the ring pairs it sums: int64 ``[n, 2]`` of ``(r1, r2)``.

    ``real_only`` drops pairs with a virtual gap ring (only the mCT has those).
    """
    table = ring_pair_plane(scanner)
    r1, r2 = np.nonzero(table >= 0)
    planes = table[r1, r2]
    if real_only:
        real = ring_is_real(scanner)
        keep = real[r1] & real[r2]
        r1, r2, planes = r1[keep], r2[keep], planes[keep]
    order = np.argsort(planes, kind="stable")
    pairs = np.stack([r1[order], r2[order]], axis=1)
    bounds = np.searchsorted(planes[order], np.arange(scanner.n_planes + 1))
    return [pairs[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def lor_to_bin(scanner: Scanner, d1, r1, d2, r2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sinogram bin of LORs given by two (crystal, ring) ends, in either order.

    Returns int64 arrays ``(plane, view, bin)`` broadcast from the inputs; all three are -1 where
    the sinogram does not hold the pair (outside the bin range or the max ring difference).
    Virtual gap crystals and rings are mapped like real ones (their bins exist, they record 0).
    """
    d1, r1, d2, r2 = np.broadcast_arrays(*(np.asarray(x, dtype=np.int64) for x in (d1, r1, d2, r2)))
    table = transaxial_lookup(scanner)
    fwd, rev = table[d1, d2], table[d2, d1]
    swap = fwd < 0  # then det1 of the convention is d2: its ring is r2
    code = np.where(swap, rev, fwd)
    ra, rb = np.where(swap, r2, r1), np.where(swap, r1, r2)
    plane = ring_pair_plane(scanner)[ra, rb]
    ok = (code >= 0) & (plane >= 0)
    c, e = np.divmod(code, scanner.n_bins)
    view = c // scanner.mash
    return (np.where(ok, plane, -1), np.where(ok, view, -1), np.where(ok, e, -1))


def lor_geometry(scanner: Scanner) -> tuple[np.ndarray, np.ndarray]:
    """Line of every (view, sub-view, bin): normal angle ``phi`` (rad) and signed distance ``s``
    (mm) from the axis, both float64 ``[view, mash, bin]``; the LOR is ``{x : x . (cos phi,
    sin phi) = s}`` with crystal ``i`` at angle ``2 pi i / N`` on radius ``radius_mm``.

    ``s = R sin(pi (e - n_bins/2) / N)`` (not arc-corrected) and
    ``phi = pi (2c + N/2 - e mod 2) / N``: odd bins sit half a sub-view off.
    """
    n = scanner.crystals_per_ring
    c = (scanner.mash * np.arange(scanner.n_views)[:, None] + np.arange(scanner.mash))[..., None]
    e = np.arange(scanner.n_bins)
    s = scanner.radius_mm * np.sin(np.pi * (e - scanner.n_bins / 2) / n)
    phi = np.pi * (2 * c + n / 2 - e % 2) / n
    return np.broadcast_to(phi, c.shape[:2] + e.shape).copy(), np.broadcast_to(s, phi.shape).copy()


# Scanners with at most this many real LORs are projected LOR by LOR by default (mini has 0.5
# million, the Vision 1.2 billion); larger ones use the fast projector's approximations.
EXACT_MAX_LORS = 5_000_000


def lor_total(scanner: Scanner) -> int:
    """Number of real LORs of the sinogram: real transaxial pairs x real ring pairs."""
    _, _, valid = transaxial_pairs(scanner)
    return int(valid.sum()) * sum(len(p) for p in plane_ring_pairs(scanner))


def ring_z_mm(scanner: Scanner) -> np.ndarray:
    """float64 ``[n_rings]``: axial centre of each ring (mm), the scanner centre at 0."""
    return (np.arange(scanner.n_rings) - (scanner.n_rings - 1) / 2) * scanner.ring_spacing_mm
