"""The network's input layout: channel counts, and which mask planes follow the counts."""

from __future__ import annotations

import pytest
import torch

from badblock.errors import BadInputError
from badblock.inference.layout import ChannelLayout, network_input, normalise_scale
from tests.inference.stacks import stack_and_mask


def test_network_input_takes_the_centre_mask_or_all_of_them():
    inp, mask = stack_and_mask()
    scale = torch.full((2, 1, 1, 1), 2.0)
    centre = network_input(inp, mask, scale, 2, True)
    assert centre.shape == (2, 6, 4, 8)
    torch.testing.assert_close(centre[:, :5], inp / 2)
    torch.testing.assert_close(centre[:, 5], mask[:, 2])
    stack = network_input(inp, mask, scale, 2, True, mask_stack=True)
    assert stack.shape == (2, 10, 4, 8)
    torch.testing.assert_close(stack[:, 5:], mask)
    assert network_input(inp, mask, scale, 2, False, mask_stack=True).shape == (2, 5, 4, 8)
    with pytest.raises(BadInputError, match="mask planes"):
        network_input(inp, mask[:, 2:3], scale, 2, True, mask_stack=True)
    with pytest.raises(BadInputError, match="mask"):
        network_input(inp, None, scale, 2, True)


@pytest.mark.parametrize("context, mask_channel, mask_stack, counts, masks", [
    (2, False, False, 5, 0), (2, True, False, 5, 1), (2, True, True, 5, 5), (0, True, True, 1, 1),
    (3, True, False, 7, 1)])
def test_channel_layout_counts_the_network_inputs(context, mask_channel, mask_stack, counts,
                                                  masks):
    layout = ChannelLayout.of(context, mask_channel, mask_stack)
    assert (layout.count_planes, layout.mask_planes, layout.in_channels) == \
        (counts, masks, counts + masks)
    inp = torch.ones(1, counts, 4, 8)
    x = network_input(inp, torch.zeros(1, counts, 4, 8), torch.ones(1, 1, 1, 1), context,
                      mask_channel, mask_stack)
    assert x.shape[1] == layout.in_channels


def test_mask_stack_needs_the_mask_channel():
    with pytest.raises(BadInputError, match="data.mask_stack"):
        ChannelLayout.of(2, False, True)


def test_normalise_scale_modes():
    inp = torch.tensor([[1.0, 3.0], [2.0, 6.0]]).view(2, 1, 1, 2)
    torch.testing.assert_close(normalise_scale(inp, "max").flatten(),
                               torch.tensor([3.0, 6.0]) + 1e-8)
    torch.testing.assert_close(normalise_scale(inp, "mean").flatten(),
                               torch.tensor([2.0, 4.0]) + 1e-8)
    assert normalise_scale(inp, "none").flatten().tolist() == [1.0, 1.0]
    with pytest.raises(BadInputError, match="data.normalise"):
        normalise_scale(inp, "median")
