"""Predictor input assembly: which mask planes reach the network, old checkpoints unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from badblock.errors import BadInputError
from badblock.models import UNet
from badblock.train.predictor import Predictor, network_input

torch.set_num_threads(1)


def _stack_and_mask() -> tuple[torch.Tensor, torch.Tensor]:
    inp = torch.arange(2 * 5 * 4 * 8, dtype=torch.float32).view(2, 5, 4, 8)
    mask = torch.zeros(2, 5, 4, 8)
    for p in range(5):
        mask[:, p, :, p] = 0.1 * (p + 1)  # every plane's mask is different
    return inp, mask


def test_network_input_takes_the_centre_mask_or_all_of_them():
    inp, mask = _stack_and_mask()
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
    inp, mask = _stack_and_mask()
    pred = Predictor(_Echo(), dict(data, normalise="none"), torch.device("cpu"))
    out = pred(inp.numpy(), mask.numpy())
    assert pred.model.channels == channels
    np.testing.assert_allclose(out, mask[:, last].numpy())


def test_predictor_runs_a_mask_stack_unet_from_its_checkpoint(tmp_path):
    from badblock.train.checkpoint import load_checkpoint, save_checkpoint

    net = UNet(in_channels=10, width=4, depth=2, bottom_convs=1, sensitivity_shape=(8, 16),
               per_lor_channels=5, mask_planes=5, prior_sigma=(0.7, 1.0, 1.0),
               prior_residual=True)
    with torch.no_grad():
        net.sensitivity.fill_(1.0)
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"model": net.state_dict(), "model_config": dict(net.config),
                           "data": {"context": 2, "mask_channel": True, "mask_stack": True,
                                    "normalise": "mean", "multiple": 4},
                           "epoch": 1, "step": 1})
    assert load_checkpoint(path)["data"]["mask_stack"] is True
    pred = Predictor.from_checkpoint(path, "cpu")
    rng = np.random.default_rng(0)
    stacks = rng.poisson(5.0, size=(2, 5, 8, 16)).astype(np.float32)
    masks = np.zeros_like(stacks)
    masks[:, 2, 2:6, 4:12] = 1.0
    out = pred(stacks, masks)
    assert out.shape == (2, 8, 16) and np.isfinite(out).all() and (out >= 0).all()
