"""One loader batch made ready on the training device: thinned, augmented, normalised.

The loader delivers clean counts (or counts already thinned in the loader), targets and mask
stacks (:mod:`badblock.data.dataset`); here each batch is damaged by binomial thinning with its
mask (:func:`badblock.data.corruption.thin`), augmented, normalised from the damaged input only
and laid out as the network's input (:mod:`badblock.inference.layout`, the layout repair uses).
All randomness comes from one device generator, re-seeded per step (:func:`step_seed`) so that
a batch's damage is a function of (seed, rank, step) alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed per (run seed, rank, step)."""
    return ((int(seed) * 1_000_003 + int(rank)) * 1_000_033 + int(step)) % (2**63 - 1)


def device_generator(device: torch.device, seed: int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP and/or ``torch.compile`` wrapper."""
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


@dataclass
class Batch:
    """A batch on the device; ``V`` real views, ``Vp`` padded (what the network sees), ``B``
    bins. "Normalised" means counts divided by ``scale``."""

    x: torch.Tensor  # network input [N, C', Vp, B]
    out_scale: torch.Tensor  # [N, 1, Vp, B] or [N, 1, 1, 1]: network output x this = counts
    crop: tuple[int, int]  # the real views (first, stop) in the network's Vp views
    target: torch.Tensor  # [N, 1, V, B] normalised, cropped to the real views
    damage: torch.Tensor  # [N, 1, V, B] centre-plane lost fraction, cropped
    scale: torch.Tensor  # [N, 1, 1, 1]
    inp_centre: torch.Tensor  # [N, 1, V, B] damaged centre plane, counts, cropped
    truth: torch.Tensor | None = None  # [N, 1, V, B] counts, cropped (validation)
    measured: torch.Tensor | None = None  # [N, 1, V, B] complete measured counts (validation)

    def counts(self, out: torch.Tensor) -> torch.Tensor:
        """The network's output ``[N, 1, Vp, B]`` as counts of the real views ``[N, 1, V, B]``."""
        a, b = self.crop
        scale = self.out_scale if self.out_scale.shape[-1] == 1 else self.out_scale[..., a:b, :]
        return out.float()[..., a:b, :] * scale


def batch_loss(loss_fn, counts: torch.Tensor, b: Batch, target: str = "complete",
               lost_power: float = 0.0) -> torch.Tensor:
    """The training loss of repaired ``counts`` ``[N, 1, V, B]`` (normalised by ``b.scale``).

    ``target`` (``loss.target``): ``complete`` compares them with the target plane. ``lost``
    compares them, on the damaged bins, with the lost counts scaled to a whole bin,
    ``r = (target - surviving input) / f``: the lost counts ``target - y ~ Poisson(f lam)``
    hold none of the surviving counts' noise, so ``E[r] = lam`` and
    ``E[(pred - r)^2] = (pred - lam)^2 + lam / f`` -- with ``lost_power`` 0 the loss is, up to
    a constant, the squared error against the truth with every damaged bin weighted alike, as
    the damaged-bin NRMSE weights them. ``lost_power`` p weights bin errors by ``f^p`` instead
    (p = 1: inverse variance of r; p = 2: the error of the lost counts themselves); both were
    measured worse on validation (docs/training.md).
    """
    pred = counts / b.scale
    if target == "lost":
        f = b.damage
        fs = torch.where(f > 0, f, torch.ones_like(f))
        r = (b.target - b.inp_centre / b.scale) / fs
        if lost_power:
            w = fs ** (0.5 * lost_power)
            return loss_fn(pred * w, r * w, f)
        return loss_fn(pred, r, f)
    return loss_fn(pred, b.target, b.damage)


def counts_to(counts: torch.Tensor, device: torch.device) -> torch.Tensor:
    """float32 counts on ``device``. uint16 has only basic support in torch off the CPU, so it
    becomes float32 on the host first (int16 travels as it is)."""
    if counts.dtype == torch.uint16 and device.type != "cpu":
        counts = counts.float()
    return counts.to(device, non_blocking=True).float()


def prepare_batch(raw: dict, layout, task: str, target_kind: str, augment_cfg,
                  device: torch.device, gen: torch.Generator, crop: tuple[int, int],
                  augment: bool, image: bool = False) -> Batch:
    """Thin, augment, normalise a loader batch on ``device`` (all randomness from ``gen``).

    ``raw``: the loader's dict (``clean`` or ``damaged`` ``[N, 2k+1, Vw, B]``, ``target``
    ``[N, 1, Vw, B]``, ``mask`` ``[N, 2k+1, Vw, B]``, optional ``sens``, ``truth``,
    ``measured`` and ``fill`` (the model-based fill of the centre plane, ``[N, 1, Vw, B]``);
    ``Vw = Vp + 2 layout.margin``); ``layout``: the :class:`~badblock.inference.ChannelLayout`;
    ``task`` and ``target_kind``: ``data.task`` and ``data.target``; ``augment_cfg``: the
    ``augment`` section; ``crop``: the real views ``(first, stop)`` in the network's ``Vp``
    views. ``augment``: apply the augmentations
    (training); ``image``: image-domain data (a store of kind 'image'): Augmentor instead of
    the sinogram-aware augmentation, when ``augment.augmentor`` is on.
    """
    from badblock.data.augment import augment_batch, augment_images
    from badblock.data.corruption import thin

    k, m = layout.context, layout.margin
    target = raw["target"].to(device, non_blocking=True)
    mask = raw["mask"].to(device, non_blocking=True)
    if "damaged" in raw:  # thinned in the loader already
        inp = counts_to(raw["damaged"], device)
    else:
        clean = counts_to(raw["clean"], device)
        inp = clean if task == "paired" else thin(clean, 1.0 - mask, gen)
    a, b = crop[0] + m, crop[1] + m  # the real views in the loader's wider planes
    if augment and augment_cfg.enabled and image:
        if augment_cfg.augmentor:
            inp, target, mask = augment_images(inp, target, mask, augment_cfg, gen)
    elif augment and augment_cfg.enabled:
        inp, target, mask = augment_batch(
            inp, target, mask, augment_cfg, gen, real_views=(a, b),
            target_mode="mean" if target_kind == "truth" else "counts")
    sens, fill = raw.get("sens"), raw.get("fill")
    x, scale, out_scale = layout.inputs(inp, mask, None if sens is None else sens.to(device),
                                        None if fill is None else fill.to(device))
    truth, measured = raw.get("truth"), raw.get("measured")
    return Batch(x=x, out_scale=out_scale, crop=crop, target=(target / scale)[..., a:b, :],
                 damage=mask[:, k:k + 1, a:b, :], scale=scale, inp_centre=inp[:, k:k + 1, a:b, :],
                 truth=None if truth is None else truth.to(device)[..., a:b, :],
                 measured=None if measured is None else measured.to(device)[..., a:b, :])


__all__ = ["Batch", "batch_loss", "prepare_batch", "counts_to", "step_seed", "device_generator",
           "unwrap"]
