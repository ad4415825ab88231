"""The network's input layout: channels, their order and values, the output's scale to counts."""

from __future__ import annotations

import math

import pytest
import torch

from badblock.errors import BadInputError
from badblock.inference.layout import ChannelLayout, normalise_scale
from badblock.physics.normconv import normconv_stack, view_margin
from tests.inference.stacks import stack_and_mask


def test_plain_layout_is_counts_over_the_stack_mean_then_the_centre_mask():
    inp, mask = stack_and_mask()
    layout = ChannelLayout(context=2, mask_channel=True, normalise="mean")
    x, scale, out_scale = layout.inputs(inp, mask)
    mean = inp.reshape(2, -1).mean(dim=1).view(2, 1, 1, 1)  # from the damaged input only
    torch.testing.assert_close(scale, mean + 1e-8)
    assert x.shape == (2, 6, 4, 8) and layout.in_channels == 6
    torch.testing.assert_close(x[:, :5], inp / (mean + 1e-8))
    torch.testing.assert_close(x[:, 5], mask[:, 2])
    torch.testing.assert_close(out_scale, scale)


def test_mask_stack_gives_every_plane_its_own_mask():
    inp, mask = stack_and_mask()
    x, _, _ = ChannelLayout(context=2, mask_channel=True, mask_stack=True).inputs(inp, mask)
    assert x.shape == (2, 10, 4, 8)
    torch.testing.assert_close(x[:, 5:], mask)
    assert ChannelLayout(context=2).inputs(inp)[0].shape == (2, 5, 4, 8)


def test_per_lor_divides_by_the_sensitivity_and_scales_back_by_it():
    inp, mask = stack_and_mask()
    sens = torch.ones_like(inp)
    sens[..., 0] = 0.0  # a gap column: no real LOR
    sens[..., 1] = 4.0
    layout = ChannelLayout(context=2, mask_channel=True, mask_stack=True, normalise="none",
                           per_lor=True)
    x, scale, out_scale = layout.inputs(inp, mask, sens)
    assert x.shape == (2, 11, 4, 8) and layout.in_channels == 11
    expect = inp.clone()
    expect[..., 0] = 0.0
    expect[..., 1] = inp[..., 1] / 4.0
    torch.testing.assert_close(x[:, :5], expect)
    torch.testing.assert_close(x[:, 10], sens[:, 2] / 4.0)  # centre pattern, peak 1
    torch.testing.assert_close(out_scale, sens[:, 2:3])  # per LOR x sensitivity = counts
    with pytest.raises(BadInputError, match="sensitivity"):
        layout.inputs(inp, mask)


def test_prior_channel_is_normconv_of_the_wide_stack_cropped_to_the_network_views():
    widths = (0.7, 1.0, 0.7)
    m = view_margin(widths)
    torch.manual_seed(0)
    inp = torch.poisson(torch.full((2, 5, 8 + 2 * m, 6), 9.0))
    mask = torch.zeros_like(inp)
    mask[:, :, m + 2:m + 4, 1:3] = 1.0
    inp = inp * (1 - mask)
    sens = torch.ones_like(inp)
    layout = ChannelLayout(context=2, mask_channel=True, mask_stack=True, normalise="mean",
                           per_lor=True, prior_widths=widths, margin=m)
    x, scale, _ = layout.inputs(inp, mask, sens)
    assert x.shape == (2, 12, 8, 6) and layout.prior_channel == 11
    torch.testing.assert_close(x[:, :5], inp[:, :, m:m + 8] / scale)  # cropped to the 8 views
    rate = normconv_stack(inp, 1 - mask, sens, widths, margin=m)
    torch.testing.assert_close(x[:, 11], rate / scale[:, 0])


def test_count_channel_is_the_log_of_the_mean_counts_per_lor_before_the_prior_channels():
    widths = (0.7, 1.0, 0.7)
    m = view_margin(widths)
    inp = torch.full((2, 5, 8 + 2 * m, 6), 3.0)
    inp[1] *= 10.0  # ten times the dose: the same input after normalising, another ln scale
    mask = torch.zeros_like(inp)
    sens = torch.full_like(inp, 2.0)  # 2 real LORs a bin: 1.5 and 15 counts per LOR
    fill = torch.full((2, 1, 8 + 2 * m, 6), 1.0)
    layout = ChannelLayout(context=2, mask_channel=True, mask_stack=True, normalise="mean",
                           per_lor=True, prior_widths=widths, margin=m, fill_prior=True,
                           count_channel=True)
    x, _, _ = layout.inputs(inp, mask, sens, fill)
    assert x.shape == (2, 14, 8, 6) and layout.in_channels == 14 and layout.prior_channel == 13
    torch.testing.assert_close(x[:, :5, :, :], torch.ones(2, 5, 8, 6))  # normalised alike
    torch.testing.assert_close(x[0, 11], torch.full((8, 6), math.log(1.5)))
    torch.testing.assert_close(x[1, 11], torch.full((8, 6), math.log(15.0)))
    torch.testing.assert_close(x[:, 13], torch.full((2, 8, 6), 0.5) / torch.tensor(
        [1.5, 15.0]).view(2, 1, 1))  # the fill stays last: fill / (s_c scale)
    assert ChannelLayout.from_dict(layout.to_dict()) == layout
    with pytest.raises(BadInputError, match="model.count_channel"):
        ChannelLayout(context=2, normalise="none", count_channel=True)


def test_layouts_refuse_what_they_cannot_build():
    inp, mask = stack_and_mask()
    with pytest.raises(BadInputError, match="data.mask_stack"):
        ChannelLayout(context=2, mask_stack=True)
    with pytest.raises(BadInputError, match="mask"):
        ChannelLayout(context=2, mask_channel=True).inputs(inp)
    with pytest.raises(BadInputError, match="mask"):
        ChannelLayout(context=2, mask_channel=True, mask_stack=True).inputs(inp, mask[:, 2:3])
    with pytest.raises(BadInputError, match="stacks"):
        ChannelLayout(context=1).inputs(inp)  # 5 planes, the layout wants 3
    with pytest.raises(BadInputError, match="per_lor"):
        ChannelLayout(context=2, mask_channel=True, mask_stack=True, prior_widths=(1, 1, 1),
                      margin=12)
    with pytest.raises(BadInputError, match="margin"):
        ChannelLayout(context=2, mask_channel=True, mask_stack=True, per_lor=True,
                      prior_widths=(1, 1, 1), margin=3)


def test_layout_round_trips_through_a_checkpoint_dict_and_old_ones_read_plain():
    layout = ChannelLayout(context=2, mask_channel=True, mask_stack=True, normalise="mean",
                           per_lor=True, prior_widths=(0.7, 1.5, 0.7), margin=18)
    assert ChannelLayout.from_dict(layout.to_dict()) == layout
    old = ChannelLayout.from_dict({"context": 2, "mask_channel": True})
    assert old == ChannelLayout(context=2, mask_channel=True)
    assert old.in_channels == 6 and old.prior_channel is None


def test_normalise_scale_modes():
    inp = torch.tensor([[1.0, 3.0], [2.0, 6.0]]).view(2, 1, 1, 2)
    torch.testing.assert_close(normalise_scale(inp, "max").flatten(),
                               torch.tensor([3.0, 6.0]) + 1e-8)
    torch.testing.assert_close(normalise_scale(inp, "mean").flatten(),
                               torch.tensor([2.0, 4.0]) + 1e-8)
    assert normalise_scale(inp, "none").flatten().tolist() == [1.0, 1.0]
    with pytest.raises(BadInputError, match="data.normalise"):
        normalise_scale(inp, "median")
