"""Sinogram augmentation keeps input, target and mask aligned and is a true object rotation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from badblock.config import load_config
from badblock.data.augment import (
    augment_batch,
    augmentor_pipeline,
    pad_views_self,
    roll_flip_views,
)
from badblock.errors import BadInputError

torch.set_num_threads(1)


def aug_cfg(*overrides):
    return load_config(overrides=list(overrides)).augment


def point_sinogram(x0: float, y0: float, views: int = 24, bins: int = 32) -> torch.Tensor:
    """A blurred point source at (x0, y0) in bin units over 180 degrees: ``[views, bins]``.

    The radial centre is bin ``bins / 2``, the presets' convention (badblock.physics.radial_flip).
    """
    theta = torch.arange(views, dtype=torch.float64) * math.pi / views
    s = torch.arange(bins, dtype=torch.float64) - bins / 2
    s0 = x0 * torch.cos(theta) + y0 * torch.sin(theta)
    return torch.exp(-((s[None, :] - s0[:, None]) ** 2) / 2.0)


def test_view_roll_with_radial_flip_is_an_object_rotation():
    views = 24
    sino = point_sinogram(6.0, -3.0, views)[None, None]
    for r in (1, 7, 23):
        rolled = roll_flip_views(sino, torch.tensor([r]), torch.tensor([False]))
        phi = r * math.pi / views  # the object rotated by -phi
        x1 = 6.0 * math.cos(phi) - 3.0 * math.sin(phi)
        y1 = -6.0 * math.sin(phi) - 3.0 * math.cos(phi)
        # bin 0 has no mirror partner inside the range: compare the others
        torch.testing.assert_close(rolled[0, 0, :, 1:], point_sinogram(x1, y1, views)[:, 1:])
    mirrored = roll_flip_views(sino, torch.tensor([0]), torch.tensor([True]))
    torch.testing.assert_close(mirrored[0, 0, :, 1:],
                               point_sinogram(-6.0, 3.0, views)[:, 1:])  # 180 degrees
    # a plain wrap (np.roll) would not be a rotation
    assert not torch.allclose(torch.roll(sino, -7, dims=-2)[0, 0],
                              roll_flip_views(sino, torch.tensor([7]), torch.tensor([False]))[0, 0])


def marker_batch(n=8, c=5, v=12, b=10):
    """A marker pattern with a unique value per (sample, view, bin), the same in every array."""
    marker = torch.arange(n * v * b, dtype=torch.float32).view(n, 1, v, b) + 1
    inp = marker.repeat(1, c, 1, 1)
    return inp, marker.clone(), marker.repeat(1, c, 1, 1) * 10


def test_input_target_mask_stay_aligned():
    inp, target, mask = marker_batch()
    cfg = aug_cfg("augment.view_roll=1.0", "augment.radial_flip=0.5")
    out_i, out_t, out_m = augment_batch(inp, target, mask, cfg, torch.Generator().manual_seed(0))
    assert out_i.shape == inp.shape and out_t.shape == target.shape
    for ch in range(inp.shape[1]):
        assert torch.equal(out_i[:, ch: ch + 1], out_t)
        assert torch.equal(out_m[:, ch: ch + 1], out_t * 10)
    assert not torch.equal(out_t, target)  # something happened
    # every sample holds only its own values (nothing leaks between samples)
    for k in range(inp.shape[0]):
        assert torch.isin(out_t[k], target[k]).all()


def test_reproducible_with_a_seeded_generator():
    inp, target, mask = marker_batch()
    cfg = aug_cfg("augment.dose=0.5")
    inp = torch.poisson(torch.full_like(inp, 20.0))
    target = inp[:, 2:3] + 3
    a = augment_batch(inp, target, None, cfg, torch.Generator().manual_seed(5))
    b = augment_batch(inp, target, None, cfg, torch.Generator().manual_seed(5))
    c = augment_batch(inp, target, None, cfg, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] is None
    assert not torch.equal(a[0], c[0])


def test_dose_thinning_keeps_the_pair_nested():
    g = torch.Generator().manual_seed(2)
    n, c = 64, 5
    complete = torch.poisson(torch.full((n, c, 8, 16), 50.0), generator=g)
    damaged = torch.binomial(complete, torch.full_like(complete, 0.6), generator=g)
    target = complete[:, 2:3].clone()
    cfg = aug_cfg("augment.view_roll=0", "augment.radial_flip=0", "augment.dose=1.0",
                  "augment.dose_min=0.5")
    new_inp, new_target, _ = augment_batch(damaged, target, None, cfg, g)
    assert (new_inp <= damaged).all() and (new_target <= target).all()
    assert (new_inp[:, 2:3] <= new_target).all()  # the damaged input stays inside its target
    keep = new_target.sum((1, 2, 3)) / target.sum((1, 2, 3))
    assert keep.min() > 0.45 and keep.max() < 1.0 and keep.std() > 0.05
    # the input's centre keeps about the same share as its target: same dose for both
    keep_inp = new_inp[:, 2].sum((1, 2)) / damaged[:, 2].sum((1, 2))
    torch.testing.assert_close(keep_inp, keep, atol=0.03, rtol=0)
    # an expectation target is scaled by the keep rate instead
    _, mean_target, _ = augment_batch(damaged, target, None, cfg,
                                      torch.Generator().manual_seed(4), target_mode="mean")
    ratios = (mean_target / target).flatten(1)
    assert torch.allclose(ratios.min(1).values, ratios.max(1).values)


def test_padded_stack_augments_the_real_views_and_rebuilds_padding():
    inp, target, mask = marker_batch(n=4, v=12)
    padded = [pad_views_self(x, 2, 2) for x in (inp, target, mask)]
    cfg = aug_cfg("augment.view_roll=1.0", "augment.radial_flip=0.5")
    out = augment_batch(*padded, cfg, torch.Generator().manual_seed(1), real_views=(2, 14))
    ref = augment_batch(inp, target, mask, cfg, torch.Generator().manual_seed(1))
    for got, want in zip(out, ref, strict=True):
        assert got.shape[-2] == 16
        assert torch.equal(got, pad_views_self(want, 2, 2))


def test_disabled_and_bad_shapes():
    inp, target, mask = marker_batch()
    out = augment_batch(inp, target, mask, aug_cfg("augment.enabled=false"))
    assert out[0] is inp and out[1] is target
    with pytest.raises(BadInputError):
        augment_batch(inp, target[..., :5], mask, aug_cfg())
    with pytest.raises(BadInputError):
        augment_batch(inp, target, mask, aug_cfg(), real_views=(3, 40))


def test_augmentor_pipeline_keeps_arrays_aligned():
    cfg = aug_cfg("augment.augmentor_zoom_p=1.0", "augment.augmentor_rotate_p=1.0",
                  "augment.augmentor_flip_lr=0.5")
    apply = augmentor_pipeline(cfg)
    assert apply.operations == ["Zoom", "Flip", "RotateStandard"]
    rng = np.random.default_rng(0)
    image = rng.random((64, 520), dtype=np.float32) * 1000  # values far above uint8's 255
    out = apply([image, image.copy(), image * 2], seed=3)
    assert all(o.dtype == np.float32 and o.shape == (64, 520) for o in out)
    assert np.array_equal(out[0], out[1])
    np.testing.assert_allclose(out[2], 2 * out[0], rtol=1e-5, atol=1e-3)
    assert out[0].max() > 300 and not np.allclose(out[0], image)
    again = apply([image, image.copy(), image * 2], seed=3)
    assert np.array_equal(again[0], out[0])
    with pytest.raises(BadInputError, match="float32"):
        apply([image.astype(np.uint16)])
