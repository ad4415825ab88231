"""The predictor: which mask planes reach the network, old checkpoints unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from badblock.inference import Predictor
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


def test_predictor_runs_a_mask_stack_unet_from_its_checkpoint(tmp_path):
    from badblock.utils.checkpoint import load_checkpoint, save_checkpoint

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
