"""Training-time augmentation.

Sinogram-aware batch augmentation on the training device (:func:`augment_batch`) and, for
image-domain data, the Augmentor pipeline of the original scripts (:func:`augmentor_pipeline`).

Sinogram geometry: a sinogram over 180 degrees continues past its last view
into its first with the radial axis reversed, ``p(theta + pi, s) = p(theta, -s)``. Hence

- *view roll with radial flip*: ``out[v] = p[v + r]``, where views rolled past the end come
  back radially flipped -- the sinogram of the object rotated by ``r`` view steps;
- *radial flip*: the whole plane reversed along the bins -- the object rotated by 180 degrees.

Both are exact for non-TOF direct planes. For a TOF bin ``t`` (an oblique segment ``s``) the
continuation past 180 degrees lives in TOF bin ``-t`` (segment ``-s``), which the stack does not
hold: the flipped views then stand in for it, the same approximation a plain flipped wrap makes.
Set ``augment.view_roll: 0`` to train without it. The radial flip is the geometry's own
(:func:`badblock.physics.radial_flip`: bin ``e`` <-> ``n_bins - e``, about the centre bin).

Count-level thinning (*dose*): a lower-dose acquisition of the same object. Each count of the
complete scan survives with the keep rate ``k`` and, independently, the dead block with
``1 - f``; the order does not matter, so with ``inp = Binomial(target, 1 - f)`` the nested pair
is ``inp' = Binomial(inp, k)`` and ``target' = inp'_centre + Binomial(target - inp_centre, k)``:
input and target stay a consistent (damaged, complete) pair of one lower-dose scan. This needs
raw counts: augment *before* normalising, and with the mask channel not yet appended.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np
import torch

from badblock.data.corruption import thin
from badblock.errors import BadInputError


def _uniform(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(n, generator=generator, device=gen_device).to(device)


def radial_flip_t(x: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`badblock.physics.radial_flip`: ``out[e] = x[n_bins - e]`` along
    the last axis, bin 0 taking ``x[n_bins - 1]`` (it has no partner in range)."""
    return torch.cat([x[..., -1:], x.flip(-1)[..., :-1]], dim=-1)


def roll_flip_views(x: torch.Tensor, shift: torch.Tensor, mirror: torch.Tensor) -> torch.Tensor:
    """Per-sample view roll with radial flip, then an optional radial flip.

    ``x``: ``[N, C, V, B]``; ``shift``: int ``[N]`` in ``0..V-1`` (``out[v] = x[v + shift]``,
    views from past the end radially flipped); ``mirror``: bool ``[N]`` (flip every view).
    """
    n, c, v, b = x.shape
    pos = torch.arange(v, device=x.device).unsqueeze(0) + shift.to(x.device).unsqueeze(1)  # [N,V]
    wrapped = pos >= v
    flip = wrapped ^ mirror.to(x.device).unsqueeze(1)
    index = (pos % v).view(n, 1, v, 1).expand(n, c, v, b)
    gathered = x.gather(2, index)
    return torch.where(flip.view(n, 1, v, 1), radial_flip_t(gathered), gathered)


def pad_views_self(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Pad the view axis (-2) with the plane's own views, flipped radially (the flipped wrap)."""
    v = x.shape[-2]
    if before > v or after > v:
        raise BadInputError("real_views", f"padding {before}+{after} exceeds the {v} real views")
    parts = [radial_flip_t(x[..., v - before:, :])] if before else []
    parts.append(x)
    if after:
        parts.append(radial_flip_t(x[..., :after, :]))
    return torch.cat(parts, dim=-2)


def augment_batch(inp: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, cfg,
                  generator: torch.Generator | None = None, *,
                  real_views: tuple[int, int] | None = None,
                  target_mode: str = "counts"):
    """Augment a training batch in place of the device it lives on; returns ``(inp, target, mask)``.

    ``inp``: ``[N, C, V, B]`` damaged counts of the ``C = 2k+1`` context planes (centre plane
    ``C // 2``); ``target``: ``[N, 1, V, B]`` the complete centre plane (counts, or with
    ``target_mode='mean'`` an expectation, which thinning scales by the keep rate); ``mask``:
    ``[N, Cm, V, B]`` lost fraction or ``None``. ``cfg``: an ``AugmentConfig`` (probabilities
    per sample). ``real_views=(start, stop)``: the views ``start:stop`` are real and the rest is
    flipped-wrap padding: the real views are augmented and the padding rebuilt from them.
    All random draws come from ``generator`` (on any device), in a fixed number per batch, so a
    seeded generator reproduces the batch exactly.
    """
    if inp.ndim != 4 or target.ndim != 4:
        raise BadInputError("batch", f"expected [N, C, V, B] input and target, got "
                            f"{list(inp.shape)} and {list(target.shape)}")
    if target.shape[0] != inp.shape[0] or target.shape[-2:] != inp.shape[-2:]:
        raise BadInputError("batch", f"target {list(target.shape)} does not match input "
                            f"{list(inp.shape)}")
    if mask is not None and (mask.shape[0] != inp.shape[0] or mask.shape[-2:] != inp.shape[-2:]):
        raise BadInputError("batch", f"mask {list(mask.shape)} does not match input "
                            f"{list(inp.shape)}")
    if target_mode not in ("counts", "mean"):
        raise BadInputError("target_mode", f"must be 'counts' or 'mean', got {target_mode!r}")
    if not cfg.enabled:
        return inp, target, mask
    n, c, v_all, _ = inp.shape
    start, stop = (0, v_all) if real_views is None else real_views
    if not 0 <= start < stop <= v_all:
        raise BadInputError("real_views", f"({start}, {stop}) outside 0..{v_all}")
    device = inp.device

    # a fixed number of draws per batch keeps the generator's stream independent of outcomes
    u_roll, u_shift, u_flip, u_dose, u_keep = (_uniform(n, generator, device) for _ in range(5))
    v = stop - start
    shift = torch.where(u_roll < cfg.view_roll, (u_shift * v).long().clamp(max=v - 1), 0)
    mirror = u_flip < cfg.radial_flip

    def geometry(x: torch.Tensor) -> torch.Tensor:
        real = roll_flip_views(x[..., start:stop, :], shift, mirror)
        return pad_views_self(real, start, v_all - stop) if real_views is not None else real

    if cfg.view_roll > 0 or cfg.radial_flip > 0:
        inp, target = geometry(inp), geometry(target)
        mask = None if mask is None else geometry(mask)

    if cfg.dose > 0:
        if not 0.0 < cfg.dose_min <= 1.0:
            raise BadInputError("augment.dose_min", f"must be in (0, 1], got {cfg.dose_min}")
        # log-uniform: every factor of two in dose is drawn as often
        keep = torch.where(u_dose < cfg.dose, cfg.dose_min ** u_keep, 1.0)
        keep = keep.to(inp.dtype if inp.is_floating_point() else torch.float32).view(n, 1, 1, 1)
        centre = inp[:, c // 2: c // 2 + 1]
        new_inp = thin(inp, keep, generator)
        if target_mode == "mean":
            target = target * keep.to(target.dtype)
        else:
            lost = (target - centre.to(target.dtype)).clamp(min=0)
            target = new_inp[:, c // 2: c // 2 + 1].to(target.dtype) + thin(lost, keep, generator)
        inp = new_inp
    return inp, target, mask


def augmentor_pipeline(cfg) -> Callable[..., list[np.ndarray]]:
    """The original scripts' Augmentor pipeline for image-domain data: zoom, flips, rotation.

    Returns ``apply(arrays, seed=None) -> list[np.ndarray]``: the same random operation (same
    parameters) is applied to every 2-D array of one sample (input, target, mask), as
    Augmentor's ``DataPipeline`` does. Arrays must be float32 ``[H, W]`` (Augmentor 0.2.12 clips
    uint16 to 255 when rotating); rotation is ``rotate_without_crop`` (``rotate()`` fails or
    stretches on 64 x 520 planes). Augmentor rounds probabilities to 0.1. ``seed`` seeds Python's
    ``random`` (which Augmentor uses) for this call only; the global state is restored.
    """
    import Augmentor

    pipe = Augmentor.DataPipeline([[np.zeros((2, 2), np.float32)]])
    if cfg.augmentor_zoom_p > 0:
        lo, hi = cfg.augmentor_zoom
        pipe.zoom(probability=cfg.augmentor_zoom_p, min_factor=lo, max_factor=hi)
    if cfg.augmentor_flip_lr > 0:
        pipe.flip_left_right(probability=cfg.augmentor_flip_lr)
    if cfg.augmentor_flip_tb > 0:
        pipe.flip_top_bottom(probability=cfg.augmentor_flip_tb)
    if cfg.augmentor_rotate_p > 0 and cfg.augmentor_rotate > 0:
        pipe.rotate_without_crop(probability=cfg.augmentor_rotate_p,
                                 max_left_rotation=cfg.augmentor_rotate,
                                 max_right_rotation=cfg.augmentor_rotate, expand=False)
    operations = list(pipe.operations)

    def apply(arrays: Sequence[np.ndarray], seed: int | None = None) -> list[np.ndarray]:
        from PIL import Image

        shape = arrays[0].shape
        for i, a in enumerate(arrays):
            if a.dtype != np.float32 or a.ndim != 2 or a.shape != shape:
                raise BadInputError(f"array {i}", f"Augmentor needs float32 2-D arrays of one "
                                    f"shape, got {a.dtype} {list(a.shape)} (first {list(shape)})")
        state = random.getstate()
        try:
            if seed is not None:
                random.seed(seed)
            images = [Image.fromarray(np.ascontiguousarray(a)) for a in arrays]
            for op in operations:
                # Augmentor's own rule (DataPipeline.sample): a draw rounded to 0.1
                if round(random.uniform(0, 1), 1) <= op.probability:
                    images = op.perform_operation(images)
            return [np.asarray(im, dtype=np.float32).copy() for im in images]
        finally:
            random.setstate(state)

    apply.operations = [type(op).__name__ for op in operations]
    return apply


_PIPELINES: dict = {}


def augment_images(inp: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cfg,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """Image-domain batch augmentation with the original scripts' Augmentor pipeline.

    ``inp`` ``[N, C, H, W]``, ``target`` ``[N, 1, H, W]``, ``mask`` ``[N, C, H, W]``: every plane
    of one sample gets the same random zoom / flip / rotation (one Augmentor ``DataPipeline``
    draw, seeded from ``generator``, so a run is reproducible); samples differ. Runs on the CPU
    in float32 (Augmentor works on PIL images) and returns tensors on the inputs' device.
    Sinogram-aware augmentation (:func:`augment_batch`) would be wrong for images: an image has
    no flipped wrap.
    """
    key = tuple(sorted(vars(cfg).items()))
    apply = _PIPELINES.get(key)
    if apply is None:
        apply = _PIPELINES[key] = augmentor_pipeline(cfg)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    seeds = torch.randint(0, 2**31 - 1, (inp.shape[0],), generator=generator,
                          device=gen_device).tolist()
    parts = [inp, target, mask]
    host = [t.detach().to("cpu", torch.float32).numpy() for t in parts]
    sizes = [a.shape[1] for a in host]
    out = [np.empty_like(a) for a in host]
    for i, seed in enumerate(seeds):
        planes = [np.ascontiguousarray(a[i, c]) for a in host for c in range(a.shape[1])]
        done = apply(planes, seed=seed)
        j = 0
        for o, n in zip(out, sizes):
            for c in range(n):
                o[i, c] = done[j]
                j += 1
    return tuple(torch.from_numpy(o).to(t.device, t.dtype) for o, t in zip(out, parts))
