"""Context stacks of neighbouring planes: sinogram geometry shared by training and repair.

A network input for plane ``p`` of TOF bin ``t`` is the ``2k+1`` planes ``p-k .. p+k`` of that
TOF bin, clamped inside ``p``'s axial segment (a stack never mixes segments: neighbouring
storage indices across a boundary are unrelated ring differences). The view axis is padded to
``views_to`` (a multiple of ``2**depth`` so the UNet can downsample) with the flipped wrap of
the sinogram: past 180 degrees a plane continues into its wrap partner (the same plane for
segment 0 without TOF; the opposite segment / mirrored TOF bin otherwise) with the radial axis
reversed (:func:`badblock.physics.wrap.wrap_partner`, :func:`badblock.physics.wrap.pad_views`).
Padding is split as evenly as possible, the extra view going after: see :func:`view_padding`;
callers crop ``[before:before + n_views]`` from the network output.
"""

from __future__ import annotations

import functools

import numpy as np

from badblock.io.segments import Segment, segment_offsets
from badblock.physics.wrap import pad_plan, pad_views, radial_index, wrap_partner


def padded_views(n_views: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``n_views`` (e.g. 50 -> 64 for 16)."""
    multiple = max(1, int(multiple))
    return -(-int(n_views) // multiple) * multiple


def view_padding(n_views: int, views_to: int) -> tuple[int, int]:
    """Views added ``(before, after)`` to reach ``views_to``; crop with ``[before:before+n]``."""
    extra = int(views_to) - int(n_views)
    if extra < 0:
        raise ValueError(f"cannot pad {n_views} views down to {views_to}")
    return extra // 2, extra - extra // 2


def whole_axis_segments(n_planes: int) -> list[Segment]:
    """One segment over all planes: for data without a segment table (2-D sinograms, images)."""
    return [Segment(0, 0, 0, int(n_planes))]


def segment_bounds(segments: list[Segment], p: int) -> tuple[int, int]:
    """``[start, stop)`` of the stored plane range of the segment that holds plane ``p``."""
    offs = _offsets(tuple(segments))
    i = int(np.searchsorted(offs, p, side="right")) - 1
    if i < 0 or i >= len(segments):
        raise IndexError(f"plane {p} is outside the {int(offs[-1])} planes of the segments")
    return int(offs[i]), int(offs[i + 1])


def context_planes(p: int, context: int, segments: list[Segment]) -> np.ndarray:
    """Plane indices ``p-k .. p+k`` clamped into p's segment: int64 ``[2k+1]``."""
    lo, hi = segment_bounds(segments, p)
    return np.clip(np.arange(p - context, p + context + 1), lo, hi - 1)


@functools.lru_cache(maxsize=32)
def _offsets(segments: tuple[Segment, ...]) -> np.ndarray:
    offs = segment_offsets(list(segments))
    offs.flags.writeable = False
    return offs


@functools.lru_cache(maxsize=32)
def _partner_table(segments: tuple[Segment, ...], n_tof: int, tof_order: str):
    """(TOF map [T], plane map [P]) of wrap partners: the TOF mirror does not depend on the
    plane, nor the partner plane on the TOF bin, so two small tables replace per-call work."""
    segs = list(segments)
    tmap = np.array([wrap_partner(segs, n_tof, tof_order, t, 0)[0] for t in range(n_tof)])
    n_planes = int(segment_offsets(segs)[-1])
    pmap = np.array([wrap_partner(segs, 1, "none", 0, p)[1] for p in range(n_planes)])
    return tmap, pmap


def _partners(segments, n_tof, tof_order, t, planes):
    tmap, pmap = _partner_table(tuple(segments), int(n_tof), str(tof_order))
    return np.full(len(planes), tmap[t]), pmap[planes]


def plane_stack(data: np.ndarray, t: int, p: int, context: int, segments: list[Segment] | None,
                tof_order: str, views_to: int, dtype=np.float32) -> np.ndarray:
    """The ``2k+1`` planes around plane ``p`` of TOF bin ``t``, padded to ``views_to`` views.

    ``data``: ``[TOF, plane, view, bin]`` (any dtype, typically a read-only memmap).
    Returns ``[2k+1, views_to, bin]`` counts (not normalised), float32 unless ``dtype`` says
    otherwise (``dtype=None`` keeps the data's own, e.g. uint16: half the bytes to move).
    """
    n_tof, n_planes, n_views, _ = data.shape
    dtype = np.dtype(data.dtype.newbyteorder("=") if dtype is None else dtype)
    segments = segments or whole_axis_segments(n_planes)
    planes = context_planes(p, context, segments)
    stack = np.asarray(data[t, planes], dtype=dtype)
    before, after = view_padding(n_views, views_to)
    if before == 0 and after == 0:
        return stack
    pt, pp = _partners(segments, n_tof, tof_order, t, planes)
    partner = np.asarray(data[pt, pp], dtype=dtype)
    return np.ascontiguousarray(pad_views(stack, partner, before, after), dtype=dtype)


def mask_stack(mask: np.ndarray, p: int, context: int, segments: list[Segment] | None,
               views_to: int) -> np.ndarray:
    """Like :func:`plane_stack` for a mask ``[plane, view, bin]`` (fraction of LORs lost).

    The mask is the same for all TOF bins, so the wrap partner is taken with TOF left out.
    Returns float32 ``[2k+1, views_to, bin]``.
    """
    n_planes, n_views, _ = mask.shape
    segments = segments or whole_axis_segments(n_planes)
    planes = context_planes(p, context, segments)
    stack = np.asarray(mask[planes], dtype=np.float32)
    before, after = view_padding(n_views, views_to)
    if before == 0 and after == 0:
        return stack
    _, pp = _partners(segments, 1, "none", 0, planes)
    partner = np.asarray(mask[pp], dtype=np.float32)
    return np.ascontiguousarray(pad_views(stack, partner, before, after), dtype=np.float32)


@functools.lru_cache(maxsize=32)
def _stack_tables(segments: tuple[Segment, ...], n_tof: int, tof_order: str):
    """(first plane [P], stop plane [P] of each plane's segment, TOF partner [T], plane
    partner [P]): one cache look-up per stack instead of one per helper."""
    offs = _offsets(segments)
    seg = np.searchsorted(offs, np.arange(int(offs[-1])), side="right") - 1
    tmap, pmap = _partner_table(segments, n_tof, tof_order)
    return offs[seg], offs[seg + 1], tmap, pmap


def _planes_and_partners(segments, n_planes: int, n_tof: int, tof_order: str, p: int,
                         context: int):
    lo, hi, tmap, pmap = _stack_tables(tuple(segments or whole_axis_segments(n_planes)),
                                       int(n_tof), str(tof_order))
    if not 0 <= p < len(lo):
        raise IndexError(f"plane {p} is outside the {len(lo)} planes of the segments")
    planes = np.clip(np.arange(p - context, p + context + 1), lo[p], hi[p] - 1)
    return planes, tmap, pmap[planes]


def _plain(a):
    # np.memmap's __getitem__ costs more than the small reads it does here; same buffer
    return a.view(np.ndarray) if isinstance(a, np.memmap) else a


def plane_stack_into(out: np.ndarray, data: np.ndarray, t: int, p: int, context: int,
                     segments: list[Segment] | None, tof_order: str) -> np.ndarray:
    """:func:`plane_stack` written into ``out`` ``[2k+1, views_to, bin]`` (its dtype and view
    count say what to make); returns ``out``.

    The same values as ``plane_stack(data, t, p, context, segments, tof_order, views_to,
    dtype=out.dtype)``, without its temporaries: the real views are copied (and cast) straight
    from ``data`` into place, and of the wrap partner only the views the padding shows are read.
    The batch loader fills preallocated batch buffers with it.
    """
    n_tof, n_planes, n_views, n_bins = data.shape
    data = _plain(data)
    planes, tmap, partners = _planes_and_partners(segments, n_planes, n_tof, tof_order, p,
                                                  context)
    before, after = view_padding(n_views, out.shape[-2])
    out[:, before:before + n_views] = data[t, planes]
    same_to, same_from, flip_to, flip_from = pad_plan(n_views, before, after)
    if same_to.size:
        out[:, same_to] = out[:, before + same_from]
    if flip_to.size:
        tp = int(tmap[t])
        if tp == t and np.array_equal(partners, planes):  # own partners: already in place
            part = out[:, before + flip_from]
        else:
            part = data[tp, partners[:, None], flip_from[None, :]]  # [2k+1, n, bin]
        out[:, flip_to] = part[..., radial_index(n_bins)]
    return out


def mask_stack_into(out: np.ndarray, mask, p: int, context: int,
                    segments: list[Segment] | None) -> np.ndarray:
    """:func:`mask_stack` written into ``out`` float32 ``[2k+1, views_to, bin]``; returns it.

    ``mask`` is asked for the same plane lists as :func:`mask_stack` asks (so a computed mask,
    e.g. the dataset's per-block masks computed on demand, gives bitwise the same values).
    """
    n_planes, n_views, n_bins = mask.shape
    mask = _plain(mask)
    planes, _, pp = _planes_and_partners(segments, n_planes, 1, "none", p, context)
    before, after = view_padding(n_views, out.shape[-2])
    out[:, before:before + n_views] = mask[planes]
    same_to, same_from, flip_to, flip_from = pad_plan(n_views, before, after)
    if same_to.size:
        out[:, same_to] = out[:, before + same_from]
    if flip_to.size:
        if np.array_equal(pp, planes):  # own partners (e.g. segment 0): already in place
            part = out[:, before + flip_from]
        elif isinstance(mask, np.ndarray):
            part = mask[pp[:, None], flip_from[None, :]]
        else:
            part = np.asarray(mask[pp])[:, flip_from]
        out[:, flip_to] = part[..., radial_index(n_bins)]
    return out


__all__ = ["plane_stack", "mask_stack", "plane_stack_into", "mask_stack_into", "padded_views",
           "view_padding", "context_planes", "segment_bounds", "whole_axis_segments"]
