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

from badblock.inference.layout import network_input, normalise_scale


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
    """A batch on the device; ``V`` real views, ``Vp`` padded, ``B`` bins."""

    x: torch.Tensor  # network input [N, C(+1), Vp, B], normalised
    target: torch.Tensor  # [N, 1, V, B] normalised, cropped to the real views
    damage: torch.Tensor  # [N, 1, V, B] centre-plane lost fraction, cropped
    scale: torch.Tensor  # [N, 1, 1, 1]
    inp_centre: torch.Tensor  # [N, 1, V, B] damaged centre plane, counts, cropped
    truth: torch.Tensor | None = None  # [N, 1, V, B] counts, cropped (validation)
    measured: torch.Tensor | None = None  # [N, 1, V, B] complete measured counts (validation)


def counts_to(counts: torch.Tensor, device: torch.device) -> torch.Tensor:
    """float32 counts on ``device``. uint16 has only basic support in torch off the CPU, so it
    becomes float32 on the host first (int16 travels as it is)."""
    if counts.dtype == torch.uint16 and device.type != "cpu":
        counts = counts.float()
    return counts.to(device, non_blocking=True).float()


def prepare_batch(raw: dict, data_cfg, augment_cfg, device: torch.device, gen: torch.Generator,
                  crop: tuple[int, int], augment: bool, image: bool = False) -> Batch:
    """Thin, augment, normalise a loader batch on ``device`` (all randomness from ``gen``).

    ``raw``: the loader's dict (``clean`` or ``damaged`` ``[N, 2k+1, Vp, B]``, ``target``
    ``[N, 1, Vp, B]``, ``mask`` ``[N, 2k+1, Vp, B]``, optional ``truth`` and ``measured``);
    ``data_cfg`` and
    ``augment_cfg``: the ``data`` and ``augment`` config sections; ``crop``: the real views
    ``(first, stop)`` in the padded axis. ``augment``: apply the augmentations (training);
    ``image``: image-domain data (a store of kind 'image'): Augmentor instead of the
    sinogram-aware augmentation, when ``augment.augmentor`` is on.
    """
    from badblock.data.augment import augment_batch, augment_images
    from badblock.data.corruption import thin

    d = data_cfg
    k = d.context
    target = raw["target"].to(device, non_blocking=True)
    mask = raw["mask"].to(device, non_blocking=True)
    if "damaged" in raw:  # thinned in the loader already
        inp = counts_to(raw["damaged"], device)
    else:
        clean = counts_to(raw["clean"], device)
        inp = clean if d.task == "paired" else thin(clean, 1.0 - mask, gen)
    if augment and augment_cfg.enabled and image:
        if augment_cfg.augmentor:
            inp, target, mask = augment_images(inp, target, mask, augment_cfg, gen)
    elif augment and augment_cfg.enabled:
        inp, target, mask = augment_batch(
            inp, target, mask, augment_cfg, gen, real_views=crop,
            target_mode="mean" if d.target == "truth" else "counts")
    scale = normalise_scale(inp, d.normalise)
    x = network_input(inp, mask, scale, k, d.mask_channel, d.mask_stack)
    a, b = crop
    truth, measured = raw.get("truth"), raw.get("measured")
    return Batch(x=x, target=(target / scale)[..., a:b, :], damage=mask[:, k:k + 1, a:b, :],
                 scale=scale, inp_centre=inp[:, k:k + 1, a:b, :],
                 truth=None if truth is None else truth.to(device)[..., a:b, :],
                 measured=None if measured is None else measured.to(device)[..., a:b, :])


__all__ = ["Batch", "prepare_batch", "counts_to", "step_seed", "device_generator", "unwrap"]
