"""The sinogram past 180 degrees: view ``V + j`` is view ``j`` of the partner plane, radially
flipped.

From the bin convention (:mod:`badblock.physics.geometry`), sub-view ``c + N/2`` and bin ``e``
hold the crystals of sub-view ``c`` and bin ``n_bins - e`` with det1 and det2 swapped. Swapping
the ends reverses the radial axis about ``n_bins / 2`` (not ``(n_bins - 1) / 2``), negates the
ring difference (segment ``k`` -> ``-k``, same ``r1 + r2`` so same plane index within the
segment) and negates the time difference (TOF ``t`` -> ``-t``).

When ``mash * n_views == N/2`` (mini, mCT, mMR) view ``n_views`` is exactly view 0 of the
partner. The Vision's 50 x 8 = 400 sub-views exceed 399 by one, so its view 50 continues into
view 0 shifted by one sub-view (1/8 of a view, 0.45 degrees): the wrap is then a close, not
exact, continuation - still far better than a plain periodic wrap, which joins ``s`` to ``-s``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from badblock.errors import BadInputError
from badblock.io.segments import Segment, segment_offsets


def radial_flip(x: np.ndarray) -> np.ndarray:
    """Reverse the bin axis (-1) about the centre bin ``n_bins / 2``: ``out[e] = x[n_bins - e]``.

    Bin 0 has no partner inside the range (it would be ``x[n_bins]``); it takes the nearest one,
    ``x[n_bins - 1]``. Exact for every preset's convention (off = n_bins / 4). Returns a copy.
    """
    x = np.asarray(x)
    return np.concatenate([x[..., -1:], x[..., :0:-1]], axis=-1)


def tof_mirror(n_tof: int, tof_order: str) -> np.ndarray:
    """int ``[n_tof]``: stored index of TOF bin ``-t`` for each stored index of ``t``.

    'siemens' stores centre first, interleaved (0, +1, -1, +2, -2, ...): pairs (1, 2), (3, 4), ...
    swap. 'linear' stores time order: index ``i`` -> ``n_tof - 1 - i``. 'none': no TOF.
    """
    idx = np.arange(n_tof)
    if tof_order == "none" or n_tof == 1:
        if n_tof != 1:
            raise BadInputError("tof_order", f"'none' but {n_tof} TOF bins")
        return idx
    if tof_order == "linear":
        return idx[::-1].copy()
    if tof_order == "siemens":
        if n_tof % 2 == 0:
            raise BadInputError("tof_order", f"'siemens' interleaving needs an odd TOF count, "
                                f"not {n_tof}")
        return np.where(idx == 0, 0, np.where(idx % 2 == 1, idx + 1, idx - 1))
    raise BadInputError("tof_order", f"unknown TOF order {tof_order!r} "
                        "(choose siemens, linear or none)")


def partner_planes(segments: list[Segment]) -> np.ndarray:
    """int ``[n_planes]``: the plane at the same axial position in the opposite segment."""
    number = {s.number: i for i, s in enumerate(segments)}
    offsets = segment_offsets(segments)
    out = []
    for seg in segments:
        j = number.get(-seg.number)
        if j is None or segments[j].n_planes != seg.n_planes:
            raise BadInputError("segments", f"segment {seg.number} has no mirror segment "
                                f"{-seg.number} of the same size")
        out.append(np.arange(seg.n_planes) + offsets[j])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def wrap_partner(segments: list[Segment], n_tof: int, tof_order: str, t: int, p: int) \
        -> tuple[int, int]:
    """(TOF index, plane) whose view 0, radially flipped, continues plane ``p`` of TOF bin ``t``
    past its last view (and whose last views precede view 0)."""
    planes, tofs = _tables(tuple(segments), int(n_tof), str(tof_order))
    if not (0 <= p < len(planes) and 0 <= t < n_tof):
        raise BadInputError("wrap_partner", f"(t={t}, p={p}) outside {n_tof} TOF x "
                            f"{len(planes)} planes")
    return int(tofs[t]), int(planes[p])


@lru_cache(maxsize=64)
def _tables(segments: tuple[Segment, ...], n_tof: int, tof_order: str):
    # callers ask plane by plane (thousands of times per scan): build the maps once
    return partner_planes(list(segments)), tof_mirror(n_tof, tof_order)


def pad_views(stack: np.ndarray, partner: np.ndarray | None, before: int, after: int) \
        -> np.ndarray:
    """Pad the view axis (-2) of ``[..., view, bin]`` with the flipped wrap.

    ``partner`` holds the partner planes' data (same shape; see :func:`wrap_partner`), or None
    when each plane is its own partner (segment 0 without TOF). Views ``V + j`` come from
    ``radial_flip(partner[..., j, :])``, views ``-j`` from ``radial_flip(partner[..., V - j,
    :])``; pads longer than ``V`` go on alternating (two half turns give the plane itself).
    """
    stack = np.asarray(stack)
    partner = stack if partner is None else np.asarray(partner)
    if partner.shape != stack.shape:
        raise BadInputError("pad_views", f"partner shape {partner.shape} != {stack.shape}")
    if before < 0 or after < 0:
        raise BadInputError("pad_views", "pad widths must be >= 0")
    n_views, n_bins = stack.shape[-2], stack.shape[-1]
    same_to, same_from, flip_to, flip_from = pad_plan(n_views, int(before), int(after))
    out = np.empty(stack.shape[:-2] + (n_views + before + after, n_bins), dtype=stack.dtype)
    out[..., before:before + n_views, :] = stack
    if same_to.size:
        out[..., same_to, :] = stack[..., same_from, :]
    if flip_to.size:
        out[..., flip_to, :] = partner[..., flip_from, :][..., radial_index(n_bins)]
    return out


@lru_cache(maxsize=64)
def pad_plan(n_views: int, before: int, after: int):
    """Index tables of :func:`pad_views` (int64, read-only): ``(same_to, same_from, flip_to,
    flip_from)``. Output view ``before + j`` is input view ``j``; beyond that, output views
    ``same_to`` are the plane's own views ``same_from`` (whole turns, only for pads longer than
    ``n_views``) and output views ``flip_to`` the partner's views ``flip_from``, radially
    flipped. Cached because the loader pads thousands of stacks of the same shape."""
    u = np.arange(-before, n_views + after)
    turns, view = np.divmod(u, n_views)
    flip = turns % 2 == 1
    same = ~flip & (turns != 0)
    tables = (np.flatnonzero(same), view[same], np.flatnonzero(flip), view[flip])
    for a in tables:
        a.flags.writeable = False
    return tables


@lru_cache(maxsize=16)
def radial_index(n_bins: int) -> np.ndarray:
    """int64 ``[n_bins]``: ``x[..., radial_index(n)]`` equals :func:`radial_flip` ``(x)``."""
    idx = np.concatenate([[n_bins - 1], np.arange(n_bins - 1, 0, -1)]).astype(np.int64)
    idx.flags.writeable = False
    return idx
