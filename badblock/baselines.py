"""Classical gap filling: the references a learned repair has to beat.

Every baseline is a plain function ``f(counts, mask, **kw) -> float32 array`` of the same shape
as ``counts``. ``counts`` is a damaged scan ``[TOF, plane, view, bin]`` or ``[plane, view, bin]``
(counts per bin, any dtype); ``mask`` is the dead-block mask ``[plane, view, bin]``: the
fraction ``f`` of real LORs lost in each bin, 0..1, the same for every TOF bin. A bin is *fully
dead* when ``f >= 1 - DEAD_EPS``.

View-direction periodicity. A sinogram over 180 degrees continues past its last view into its
first with the radial axis reversed: p(theta + pi, s) = p(theta, -s). For TOF data the TOF bin
mirrors too (t -> -t) and for oblique planes the segment sign swaps, so the plane that continues
(t, p) past the seam is a *partner* (t2, p2) given by :func:`badblock.physics.wrap_partner`;
its views are radially flipped with :func:`badblock.physics.radial_flip`. The view axis is thus
periodic with period 2V over the pair (plane, flipped partner). Without ``segments`` every plane
is treated as a direct plane of one segment: exact for non-TOF direct planes; for TOF data the
TOF partner still comes from ``tof_order`` (default ``'siemens'`` for 4-D counts with more than
one TOF bin, since that is how Siemens stores them).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from badblock.errors import BadInputError
from badblock.io.segments import Segment
from badblock.metrics import DEAD_EPS

# Normalised-convolution widths (Gaussian sigma in planes, views, bins) when not tuned.
DEFAULT_WIDTHS = (1.0, 1.0, 1.5)
# The grid tune_normconv searches; small on purpose (27 runs of a separable filter).
TUNE_GRID = ((0.0, 0.7, 1.5), (0.7, 1.5, 3.0), (0.7, 1.5, 3.0))


# -- shapes and partners ------------------------------------------------------------------------

def _as4d(counts: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts as float32 ``[T, P, V, B]`` and the mask as float32 ``[P, V, B]`` (checked)."""
    counts = np.asarray(counts)
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 3:
        raise BadInputError("mask", f"must be [plane, view, bin], got shape {mask.shape}")
    if counts.ndim not in (3, 4):
        raise BadInputError("counts", f"must be [TOF, plane, view, bin] or [plane, view, bin], "
                                      f"got shape {counts.shape}")
    if counts.shape[-3:] != mask.shape:
        raise BadInputError("mask", f"shape {mask.shape} does not match the scan's "
                                    f"[plane, view, bin] {counts.shape[-3:]}")
    c4 = counts.reshape((-1,) + counts.shape[-3:]).astype(np.float32, copy=False)
    return c4, mask


def _check_mask(counts: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 3 or np.shape(counts)[-3:] != mask.shape:
        raise BadInputError("mask", f"shape {mask.shape} does not match the scan's "
                                    f"[plane, view, bin] {np.shape(counts)[-3:]}")
    return mask


def wrap_partners(n_tof: int, n_planes: int, segments: Sequence[Segment] | None = None,
                  tof_order: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Partner (TOF, plane) of every (t, p) past the 180 degree seam: two int arrays ``[T, P]``.

    Without ``segments`` all planes form one direct segment (each plane is its own partner);
    ``tof_order`` defaults to ``'none'`` for one TOF bin and ``'siemens'`` otherwise.
    """
    from badblock.physics import wrap_partner

    if segments is None:
        segments = [Segment(0, 0, 0, n_planes)]
    if sum(s.n_planes for s in segments) != n_planes:
        raise BadInputError("segments", f"hold {sum(s.n_planes for s in segments)} planes, "
                                        f"the scan has {n_planes}")
    if tof_order is None:
        tof_order = "none" if n_tof == 1 else "siemens"
    if n_tof == 1:
        tof_order = "none"
    tp = np.empty((n_tof, n_planes), dtype=np.int64)
    pp = np.empty((n_tof, n_planes), dtype=np.int64)
    for t in range(n_tof):
        for p in range(n_planes):
            tp[t, p], pp[t, p] = wrap_partner(list(segments), n_tof, tof_order, t, p)
    return tp, pp


def extend_views(x: np.ndarray, partners: tuple[np.ndarray, np.ndarray], planes: np.ndarray,
                 before: int, after: int) -> np.ndarray:
    """Planes ``planes`` of ``x [T, P, V, B]`` with the view axis extended by the flipped wrap.

    Returns ``[T, len(planes), before + V + after, B]``; view ``-1`` is the last view of the
    partner plane radially flipped, and so on with period 2V (any ``before``/``after`` works).
    """
    from badblock.physics import radial_flip

    tp, pp = partners
    n_views = x.shape[2]
    own = x[:, planes]
    other = radial_flip(x[tp[:, planes], pp[:, planes]])
    cycle = np.concatenate([own, other], axis=2)
    idx = np.arange(-before, n_views + after) % (2 * n_views)
    return cycle[:, :, idx]


def _mask4d(mask: np.ndarray, n_tof: int) -> np.ndarray:
    return np.broadcast_to(mask, (n_tof,) + mask.shape)


# -- the baselines ------------------------------------------------------------------------------

def none(counts: np.ndarray, mask: np.ndarray, **_: object) -> np.ndarray:
    """(a) No correction: the damaged counts as float32."""
    _check_mask(counts, mask)
    return np.asarray(counts, dtype=np.float32).copy()


def divide(counts: np.ndarray, mask: np.ndarray, **_: object) -> np.ndarray:
    """(b) Partly damaged bins divided by the surviving fraction ``1 - f``; fully dead bins 0.

    Unbiased under binomial thinning: E[y] = (1 - f) x, so E[y / (1 - f)] = x.
    """
    mask = _check_mask(counts, mask)
    keep = 1.0 - mask
    alive = keep > DEAD_EPS
    scale = np.where(alive, 1.0 / np.where(alive, keep, 1.0), 0.0).astype(np.float32)
    return np.asarray(counts, dtype=np.float32) * scale


def _linear_fill(ext: np.ndarray, valid: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Fill invalid entries in ``ext[..., lo:hi, :]`` by linear interpolation along axis -2.

    Gaps open to one side take the nearest valid value; columns with no valid entry keep theirs.
    """
    n = ext.shape[-2]
    pos = np.arange(n).reshape(n, 1)
    prev = np.maximum.accumulate(np.where(valid, pos, -1), axis=-2)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(valid, pos, n), -2), axis=-2), -2)
    prev, nxt, sl_valid = prev[..., lo:hi, :], nxt[..., lo:hi, :], valid[..., lo:hi, :]
    has_prev, has_next = prev >= 0, nxt < n
    v_prev = np.take_along_axis(ext, np.clip(prev, 0, n - 1), axis=-2)
    v_next = np.take_along_axis(ext, np.clip(nxt, 0, n - 1), axis=-2)
    here = pos[lo:hi]
    span = np.maximum(nxt - prev, 1)
    w = np.where(has_prev & has_next, (here - prev) / span, 0.0)
    both = (1.0 - w) * v_prev + w * v_next
    filled = np.where(has_prev & has_next, both,
                      np.where(has_prev, v_prev, np.where(has_next, v_next, ext[..., lo:hi, :])))
    return np.where(sl_valid, ext[..., lo:hi, :], filled).astype(np.float32)


def _sensitivity(sensitivity: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """Per-bin sensitivity ``[plane, view, bin]`` float32 (ones when None), checked."""
    if sensitivity is None:
        return np.ones(mask.shape, np.float32)
    sens = np.asarray(sensitivity, dtype=np.float32)
    if sens.shape != mask.shape:
        raise BadInputError("sensitivity", f"shape {sens.shape} does not match the mask "
                                           f"{mask.shape}")
    if not np.isfinite(sens).all() or sens.min() < 0:
        raise BadInputError("sensitivity", "must be finite and non-negative")
    return sens


def _per_lor(values: np.ndarray, sens: np.ndarray) -> np.ndarray:
    """Counts per unit of sensitivity (0 where the sensitivity is 0)."""
    ok = sens > 0
    return np.where(ok, values / np.where(ok, sens, 1.0), 0.0).astype(np.float32)


def _fill_setup(counts, mask, sensitivity):
    """What the gap fillers share: (shape, counts 4-D, mask, sensitivity, divide baseline,
    fully dead bins, planes holding any) -- they fill only where ``divide`` cannot."""
    shape = np.shape(counts)
    c4, mask = _as4d(counts, mask)
    sens = _sensitivity(sensitivity, mask)
    dead = mask >= 1.0 - DEAD_EPS
    return (shape, c4, mask, sens, divide(c4, mask), dead,
            np.flatnonzero(dead.any(axis=(1, 2))))


def interp(counts: np.ndarray, mask: np.ndarray, *, segments: Sequence[Segment] | None = None,
           tof_order: str | None = None, sensitivity: np.ndarray | None = None,
           **_: object) -> np.ndarray:
    """(c) :func:`divide`, then linear interpolation along views across fully dead bins.

    Siemens e7 GapFill style: each (TOF, plane, bin) column is a function of the view angle, and a
    run of dead views is bridged by a straight line between the nearest live views. The view axis
    wraps with the radial flip (module docstring), so a dead first or last view is bridged with
    the flipped other end of the partner plane. Columns dead over the whole 360 degree period
    stay 0. With ``sensitivity`` (``[plane, view, bin]``, e.g. the number of real LORs per bin,
    :func:`badblock.physics.real_lor_count`) the interpolation runs on counts per unit of
    sensitivity and bins of zero sensitivity (gap crystals) are not used as neighbours, as GapFill
    works on normalised data.
    """
    shape, c4, mask, sens, out, dead, planes = _fill_setup(counts, mask, sensitivity)
    if planes.size == 0:
        return out.reshape(shape)
    n_tof, n_planes, n_views, _ = c4.shape
    partners = wrap_partners(n_tof, n_planes, segments, tof_order)
    # The mask is the same for every TOF bin, but a TOF partner may sit in another plane.
    invalid = _mask4d(dead | (sens <= 0), n_tof)
    ext = extend_views(_per_lor(out, sens), partners, planes, n_views, n_views)
    ext_bad = extend_views(invalid, partners, planes, n_views, n_views)
    filled = _linear_fill(ext, ~ext_bad, n_views, 2 * n_views) * sens[planes]
    out[:, planes] = np.where(dead[planes], filled, out[:, planes])
    return out.reshape(shape)


def biharmonic(counts: np.ndarray, mask: np.ndarray, *,
               segments: Sequence[Segment] | None = None, tof_order: str | None = None,
               sensitivity: np.ndarray | None = None, pad_views: int = 8,
               **_: object) -> np.ndarray:
    """(d) :func:`divide`, then ``skimage.restoration.inpaint_biharmonic`` on fully dead bins.

    Per (TOF, plane) ``[view, bin]`` image; the view axis is first extended by ``pad_views`` on
    each side with the flipped wrap so that a gap at the seam sees both of its sides. With
    ``sensitivity`` the image inpainted is counts per unit of sensitivity, and bins of zero
    sensitivity are inpainted too (then multiplied back to 0).
    """
    from skimage.restoration import inpaint_biharmonic

    shape, c4, mask, sens, out, dead, planes = _fill_setup(counts, mask, sensitivity)
    if planes.size == 0:
        return out.reshape(shape)
    n_tof, n_planes, n_views, _ = c4.shape
    pad = int(min(pad_views, n_views))
    partners = wrap_partners(n_tof, n_planes, segments, tof_order)
    ext = extend_views(_per_lor(out, sens), partners, planes, pad, pad)
    ext_bad = extend_views(_mask4d(dead | (sens <= 0), n_tof), partners, planes, pad, pad)
    for t in range(n_tof):
        for i, p in enumerate(planes):
            holes = ext_bad[t, i]
            if holes.all():
                continue
            filled = inpaint_biharmonic(ext[t, i].astype(np.float64), holes)
            filled = filled[pad:pad + n_views] * sens[p]
            out[t, p] = np.where(dead[p], filled, out[t, p])
    return out.reshape(shape)


def normconv(counts: np.ndarray, mask: np.ndarray, *, widths: Sequence[float] = DEFAULT_WIDTHS,
             segments: Sequence[Segment] | None = None, tof_order: str | None = None,
             sensitivity: np.ndarray | None = None, **_: object) -> np.ndarray:
    """(e) Normalised convolution: ``s G * sum_j w_j y_j / G * sum_j w_j (1 - f_j) s_j``.

    The estimate of :func:`badblock.physics.normconv.normconv_stack` (its docstring has the
    formula, the kernels and how wide dead regions are bridged without holes), computed for
    every plane that holds a damaged bin from that plane's own context stack: ``y`` the damaged
    counts, ``s`` the per-bin ``sensitivity`` (real LORs per bin, e.g.
    :func:`badblock.physics.mask.real_lor_count`; 1 when None), ``widths`` the Gaussian sigmas
    (planes, views, bins). Planes are taken within their segment (clamped at its ends), views
    continue past the seam with the flipped wrap. The network's prior channel is the same
    function on the same stacks (:mod:`badblock.inference.layout`). Every bin is replaced, the
    undamaged ones too (the filter also denoises); data-consistent use takes only f > 0 bins.
    """
    import torch

    from badblock.physics.normconv import check_widths, normconv_stack, plane_radius, view_margin
    from badblock.physics.stack import mask_stack, plane_stack

    widths = check_widths(widths)
    shape = np.shape(counts)
    c4, mask = _as4d(counts, mask)
    sens = _sensitivity(sensitivity, mask)
    n_tof, n_planes, n_views, _ = c4.shape
    if segments is None:
        segments = [Segment(0, 0, 0, n_planes)]
    segments = list(segments)
    if tof_order is None or n_tof == 1:
        tof_order = "none" if n_tof == 1 else "siemens"
    k = plane_radius(widths)
    margin = view_margin(widths)
    wide = n_views + 2 * margin
    out = np.empty_like(c4)
    sens4 = sens[None]
    step = max(1, (1 << 22) // max(1, n_tof * (2 * k + 1) * wide * c4.shape[3]))
    for p0 in range(0, n_planes, step):
        planes = range(p0, min(p0 + step, n_planes))
        keep = np.stack([1.0 - mask_stack(mask, p, k, segments, wide) for p in planes])
        s = np.stack([plane_stack(sens4, 0, p, k, segments, "none", wide) for p in planes])
        y = np.stack([plane_stack(c4, t, p, k, segments, tof_order, wide)
                      for p in planes for t in range(n_tof)])
        rate = normconv_stack(torch.from_numpy(y),
                              torch.from_numpy(np.repeat(keep, n_tof, axis=0)),
                              torch.from_numpy(np.repeat(s, n_tof, axis=0)), widths,
                              margin=margin, radius=k)
        n = len(planes)
        rate = rate.numpy().reshape(n, n_tof, n_views, -1).transpose(1, 0, 2, 3)
        out[:, p0:p0 + n] = rate * sens[p0:p0 + n]
    return out.reshape(shape)


def tune_normconv(scans: Sequence[np.ndarray], truths: Sequence[np.ndarray], mask: np.ndarray, *,
                  grid: Sequence[Sequence[float]] = TUNE_GRID,
                  segments: Sequence[Segment] | None = None, tof_order: str | None = None,
                  sensitivity: np.ndarray | None = None) -> tuple[float, float, float]:
    """Widths (planes, views, bins) of :func:`normconv` with the least damaged-bin error.

    ``scans`` are damaged validation scans, ``truths`` what they should be (the noiseless
    expectation, or the complete measured scan). The score is the mean over scans of the NRMSE on
    damaged bins (f > 0), the headline metric of ``badblock evaluate``; the search is the full
    product of the three axes of ``grid``.
    """
    from badblock.metrics import nrmse

    if len(scans) == 0 or len(scans) != len(truths):
        raise BadInputError("tune_normconv", f"need validation scans with truths, got "
                                             f"{len(scans)} scans and {len(truths)} truths")
    best, best_score = None, np.inf
    for widths in itertools.product(*grid):
        score = float(np.mean([nrmse(normconv(s, mask, widths=widths, segments=segments,
                                              tof_order=tof_order, sensitivity=sensitivity),
                                     t, mask)
                               for s, t in zip(scans, truths)]))
        if score < best_score:
            best, best_score = widths, score
    return tuple(float(w) for w in best)  # type: ignore[return-value]


def _preset_for_shape(shape: tuple[int, ...]):
    """The scanner preset whose sinogram shape ``[TOF, plane, view, bin]`` is ``shape``."""
    from badblock.physics.scanners import PRESETS

    hits = [sc for sc in PRESETS.values() if sc.shape == tuple(shape)]
    if len(hits) != 1:
        raise BadInputError("model fill", f"no scanner given, and {len(hits)} presets have the "
                                          f"scan's shape {tuple(shape)}; pass scanner=")
    return hits[0]


def model_fill(counts: np.ndarray, mask: np.ndarray, *, scanner=None, mu=None,
               tof_order: str | None = None, iterations: int = 3, subsets: int = 5,
               normalisation: np.ndarray | None = None, background: np.ndarray | None = None,
               projector_options: dict | None = None, image: np.ndarray | None = None,
               **_: object) -> np.ndarray:
    """(f) Model-based fill: TOF OSEM of the damaged scan with the gaps modelled, projected.

    The damaged scan is reconstructed by :func:`badblock.physics.osem.osem` on the scanner's
    :class:`~badblock.physics.fastproj.FastProjector` (TOF, attenuation by ``mu``) with the
    sensitivity ``normalisation * (1 - f)``: the lost LORs are not in the model, so the image
    does not need them. Its forward projection ``lam`` (``+ background``) is the estimated
    complete scan. Partly damaged bins get ``y + f * lam`` (the surviving counts plus the
    estimated lost ones: unbiased for the expectation under binomial thinning), fully dead bins
    ``lam``, undamaged bins stay as measured. The 3-D TOF data seen from all other angles fill
    the gap, which local smoothing cannot do (de Jong et al. 2003 found such filling better
    than interpolation).

    ``scanner``: preset name or :class:`~badblock.physics.scanners.Scanner` (None: the preset
    whose sinogram shape the scan has); ``mu``: attenuation map ``[z, y, x]`` in 1/mm on
    ``scanner_grid(scanner)``, or None for no attenuation; ``tof_order`` of ``counts`` (default
    ``'siemens'`` for more than one TOF bin, as the other baselines); ``iterations`` x
    ``subsets`` of OSEM; ``projector_options``: ``subviews``, ``tilts``, ``pool``, ``device``;
    ``image``: that gaps-modelled reconstruction when it is already made (``[z, y, x]``, same
    projector and settings: the quality benchmark reconstructs it for its image domain too),
    which skips the OSEM.
    For real data pass the scanner preset, the CT-derived mu-map resampled to the scanner's
    grid, the scan's normalisation (per-bin efficiency, ``[plane, view, bin]``) and randoms +
    scatter as ``background`` (counts per bin, same shape and TOF order as ``counts``, or
    ``[plane, view, bin]`` per TOF bin). The ``sensitivity`` the other baselines take (real LORs
    per bin) is already part of the projector's model, so it is not used here.
    """
    from badblock.io import tof_time_order
    from badblock.physics.fastproj import FastProjector
    from badblock.physics.osem import osem
    from badblock.physics.scanners import get_scanner

    shape = np.shape(counts)
    c4, mask = _as4d(counts, mask)
    sc = _preset_for_shape(c4.shape) if scanner is None else get_scanner(scanner)
    if sc.shape != c4.shape:
        raise BadInputError("model fill", f"scan shape {c4.shape} is not the {sc.name}'s "
                                          f"{sc.shape}")
    n_tof = c4.shape[0]
    order = "none" if n_tof == 1 else (tof_order or "siemens")
    to_time = tof_time_order(n_tof, order)  # stored index of each time-ordered TOF bin
    keep = np.clip(1.0 - mask, 0.0, 1.0)
    sens = keep if normalisation is None else keep * np.asarray(normalisation, np.float32)
    bg = None
    if background is not None:
        bg = np.asarray(background, np.float32)
        bg = bg.reshape((-1,) + bg.shape[-3:])[to_time] if bg.ndim == 4 else bg
    proj = FastProjector(sc, mu, **(projector_options or {}))
    if image is None:
        image = osem(c4[to_time], proj, iterations=iterations, subsets=subsets,
                     sensitivity=sens, background=bg, desc="model fill")
    lam = proj.forward(image).cpu().numpy()
    if normalisation is not None:
        lam *= np.asarray(normalisation, np.float32)
    if bg is not None:
        lam += bg
    stored = np.empty_like(lam)
    stored[to_time] = lam
    dead = mask >= 1.0 - DEAD_EPS
    out = np.where(mask > 0, c4 + mask * stored, c4)
    out = np.where(dead, stored, out).astype(np.float32)
    return out.reshape(shape)


def fill_settings(iterations: int = 2, subsets: int = 6,
                  projector: Mapping | None = None) -> dict:
    """The settings of a model-based fill (:func:`model_fill`) as fill folders and fill-prior
    checkpoints record them: OSEM ``iterations`` x ``subsets`` and the fast projector's
    ``projector`` options (default: mean ray per view, mean tilt per plane)."""
    if iterations < 1 or subsets < 1:
        raise BadInputError("fill", f"OSEM needs iterations >= 1 and subsets >= 1, got "
                                    f"{iterations} x {subsets}")
    return {"iterations": int(iterations), "subsets": int(subsets),
            "projector": dict(projector if projector is not None
                              else {"subviews": "mean", "tilts": "plane"})}


def fill_settings_of(fills_cfg) -> dict:
    """:func:`fill_settings` of a config's ``fills`` section."""
    projector = {"subviews": fills_cfg.subviews, "tilts": fills_cfg.tilts}
    if fills_cfg.step_mm > 0:
        projector["step_mm"] = float(fills_cfg.step_mm)
    return fill_settings(fills_cfg.iterations, fills_cfg.subsets, projector)


def fill_options(settings: Mapping) -> dict:
    """:func:`model_fill`'s keyword arguments for recorded ``settings``."""
    return {"iterations": settings["iterations"], "subsets": settings["subsets"],
            "projector_options": dict(settings["projector"])}


def scan_fill(damaged: np.ndarray, mask: np.ndarray, scanner, settings: Mapping, *,
              mu: np.ndarray | None = None, tof_order: str | None = None) -> np.ndarray:
    """The model-based fill (float32, ``damaged``'s shape) of one damaged scan with ``mask``
    ``[plane, view, bin]``, by recorded ``settings`` (:func:`fill_settings`): what a fill-prior
    network is trained on and repairs with."""
    return model_fill(np.asarray(damaged, np.float32), mask, scanner=scanner, mu=mu,
                      tof_order=tof_order, **fill_options(settings))


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "none": none, "divide": divide, "interp": interp, "biharmonic": biharmonic,
    "normconv": normconv, "model": model_fill,
}


def get_baseline(name: str) -> Callable[..., np.ndarray]:
    """The baseline function called ``name`` (one of :data:`BASELINES`)."""
    try:
        return BASELINES[name]
    except KeyError:
        raise BadInputError("evaluate.baselines", f"unknown baseline '{name}' "
                                                  f"(valid: {', '.join(BASELINES)})") from None
