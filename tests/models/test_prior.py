"""The normalised-convolution prior on its own: exact on flat data, zero far from any data."""

from __future__ import annotations

import torch

from badblock.models.prior import NormConvPrior


def _input(level: float, dead: slice | None = None, planes: int = 3):
    """Per-LOR counts ``level`` on ``planes`` planes [1, 2n, 12, 16] with their masks."""
    counts = torch.full((1, planes, 12, 16), level)
    masks = torch.zeros((1, planes, 12, 16))
    if dead is not None:
        masks[..., dead] = 1.0
        counts[..., dead] = 0.0
    return torch.cat([counts, masks], 1)


def test_flat_counts_give_their_level_inside_and_across_a_dead_gap():
    sens = torch.ones(1, 1, 12, 16)
    for sigma in ((1.0, 1.0), (0.7, 1.0, 1.0)):
        prior = NormConvPrior(sigma, per_lor=3, mask_planes=3)
        out = prior(_input(4.0, slice(6, 9)), sens)
        assert out.shape == (1, 1, 12, 16)
        torch.testing.assert_close(out, torch.full_like(out, 4.0), rtol=1e-5, atol=1e-5)


def test_nothing_measured_nearby_gives_zero():
    sens = torch.ones(1, 1, 12, 16)
    prior = NormConvPrior((0.5, 0.5), per_lor=1, mask_planes=1)
    out = prior(_input(5.0, slice(0, 12), planes=1), sens)  # bins 0..11 all dead
    assert float(out[0, 0, 5, 2]) == 0.0  # 3 sigma from the nearest live bin is > 1 bin away
    torch.testing.assert_close(out[0, 0, :, 15], torch.full((12,), 5.0), rtol=1e-5, atol=1e-5)


def test_kernels_are_normalised_and_never_in_the_state_dict():
    prior = NormConvPrior((0.7, 1.5, 0.7), per_lor=5, mask_planes=5)
    assert abs(float(prior.g0.sum()) - 1.0) < 1e-6
    assert abs(float(prior.g1.sum()) - 1.0) < 1e-6
    assert prior.gp.shape == (1, 5, 1, 1) and float(prior.gp[0, 2]) == 1.0
    assert prior.state_dict() == {}


def test_a_unet_with_the_prior_has_the_state_dict_keys_of_one_without():
    from badblock.models import UNet

    kw = dict(width=4, depth=1, bottom_convs=1, sensitivity_shape=(12, 16), per_lor_channels=5)
    with_prior = UNet(in_channels=10, mask_planes=5, prior_sigma=(0.7, 1.0, 1.0), **kw)
    without = UNet(in_channels=10, mask_planes=5, **kw)
    assert list(with_prior.state_dict()) == list(without.state_dict())
