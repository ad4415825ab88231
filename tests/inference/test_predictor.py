"""The predictor: which mask planes reach the network, per-LOR prior networks, old checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from badblock.errors import BadInputError
from badblock.inference import ChannelLayout, Predictor
from badblock.models import UNet
from tests.inference.stacks import stack_and_mask

torch.set_num_threads(1)


class _Echo(torch.nn.Module):
    """Returns its last input channel: shows which mask plane the predictor passed last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.channels = x.shape[1]
        return x[:, -1:]


@pytest.mark.parametrize("data, channels, last", [
    ({"context": 2, "mask_channel": True}, 6, 2),  # a checkpoint from before mask_stack
    ({"context": 2, "mask_channel": True, "mask_stack": False}, 6, 2),
    ({"context": 2, "mask_channel": True, "mask_stack": True}, 10, 4),
])
def test_predictor_follows_the_checkpoint_data_dict(data, channels, last):
    inp, mask = stack_and_mask()
    pred = Predictor(_Echo(), dict(data, normalise="none"), torch.device("cpu"))
    out = pred(inp.numpy(), mask.numpy())
    assert pred.model.channels == channels
    np.testing.assert_allclose(out, mask[:, last].numpy())


def test_predictor_runs_a_per_lor_prior_unet_from_its_checkpoint(tmp_path):
    from badblock.physics.normconv import view_margin
    from badblock.utils.checkpoint import load_checkpoint, save_checkpoint

    widths = (0.7, 1.0, 1.0)
    layout = ChannelLayout(context=2, mask_channel=True, mask_stack=True, normalise="mean",
                           per_lor=True, prior_widths=widths, margin=view_margin(widths))
    net = UNet(in_channels=layout.in_channels, width=4, depth=2, bottom_convs=1,
               residual_channel=layout.prior_channel)
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"model": net.state_dict(), "model_config": dict(net.config),
                           "data": {**layout.to_dict(), "multiple": 4}, "epoch": 1, "step": 1})
    assert load_checkpoint(path)["data"]["prior_widths"] == list(widths)
    pred = Predictor.from_checkpoint(path, "cpu")
    assert pred.layout == layout and pred.margin == layout.margin
    rng = np.random.default_rng(0)
    wide = 8 + 2 * layout.margin
    stacks = rng.poisson(5.0, size=(2, 5, wide, 16)).astype(np.float32)
    sens = np.ones_like(stacks)
    sens[..., ::4] = 0.0  # gap columns
    masks = np.zeros_like(stacks)
    masks[:, 2, 12:18, 4:12] = 1.0
    stacks *= (1 - masks) * (sens > 0)
    out = pred(stacks, masks, sens)
    assert out.shape == (2, 8, 16) and np.isfinite(out).all() and (out >= 0).all()
    assert np.all(out[..., ::4] == 0)  # no real LOR, no counts
    with pytest.raises(BadInputError, match="sensitivity"):
        pred(stacks, masks)


def test_predictor_refuses_a_checkpoint_with_the_prior_inside_the_network(tmp_path):
    from badblock.utils.checkpoint import save_checkpoint

    net = UNet(in_channels=6, width=4, depth=2, bottom_convs=1)
    path = tmp_path / "old.pt"
    save_checkpoint(path, {"model": net.state_dict(),
                           "model_config": {**net.config, "sensitivity_shape": [8, 16],
                                            "prior_sigma": [1.0, 1.0]},
                           "data": {"context": 2, "mask_channel": True}, "epoch": 1, "step": 1})
    with pytest.raises(BadInputError, match="older badblock"):
        Predictor.from_checkpoint(path, "cpu")
