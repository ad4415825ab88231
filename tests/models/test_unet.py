"""The UNet: shapes for every option, non-negative output, the tutorial's parameter count."""

from __future__ import annotations

import pytest
import torch

from badblock.config import load_config
from badblock.errors import BadInputError
from badblock.models import UNet, build_model, parameter_count
from badblock.models.unet import RESIDUAL_FLOOR

torch.set_num_threads(1)


def tutorial_parameter_count() -> int:
    """The tutorial's UNet (section 2.3.2), counted by hand from its layer list: the layers its
    forward runs (3x3 convs without bias, BatchNorm weight+bias, transposed convs with bias)."""
    conv = lambda cin, cout, k=3: cin * cout * k * k  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    down1 = conv(5, 64) + 2 * conv(64, 64) + 3 * bn(64)
    down2 = conv(64, 64) + conv(64, 128) + 2 * conv(128, 128) + 3 * bn(128)
    down3 = conv(128, 128) + conv(128, 256) + 2 * conv(256, 256) + 3 * bn(256)
    bottom = 5 * (conv(256, 256) + bn(256))
    up2 = conv(256, 256, 4) + 256 + conv(128 + 256, 128) + 2 * conv(128, 128)
    up3 = conv(128, 128, 4) + 128 + conv(64 + 128, 64) + 2 * conv(64, 64)
    last = conv(64, 64) + conv(64, 1) + 1
    return down1 + down2 + down3 + bottom + up2 + up3 + last


def test_default_is_the_tutorial_network():
    model = UNet()
    assert parameter_count(model) == tutorial_parameter_count() == 7_328_641
    assert len(model.downs) == 3 and len(model.ups) == 2
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.bottom) == 5
    assert model.softplus.beta == 5.0
    assert "7,328,641 parameters" in model.describe()


def test_default_config_builds_the_default_network():
    cfg = load_config()
    model = build_model(cfg.model, in_channels=5)
    assert parameter_count(model) == tutorial_parameter_count()
    with_mask = build_model(cfg.model, in_channels=6)
    assert with_mask.downs[0].convs[0].in_channels == 6


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
@pytest.mark.parametrize("upsample", [1, 2, 3])
def test_shapes_and_nonnegative_output(norm, upsample):
    model = UNet(in_channels=3, width=4, depth=2, bottom_convs=2, norm=norm, upsample=upsample)
    x = torch.randn(2, 3, 8, 12)
    y = model(x)
    assert y.shape == (2, 1, 8, 12)
    assert (y >= 0).all()


@pytest.mark.parametrize("kw", [dict(depth=0), dict(depth=1), dict(depth=3), dict(kernel_size=5),
                                dict(refine_blocks=2), dict(bottom_convs=0), dict(out_channels=2),
                                dict(up_norm=True), dict(in_channels=6)])
def test_options(kw):
    args = dict(in_channels=5, width=4, bottom_convs=1) | kw
    model = UNet(**args)
    x = torch.rand(2, args["in_channels"], 16, 24)
    y = model(x)
    assert y.shape == (2, args.get("out_channels", 1), 16, 24)
    assert (y >= 0).all()


def test_width_and_depth_change_parameter_count():
    assert parameter_count(UNet(width=8, depth=1)) < parameter_count(UNet(width=8, depth=2))
    base = parameter_count(UNet(width=8))
    assert parameter_count(UNet(width=8, refine_blocks=1)) == base + 2 * (8 * 8 * 9 + 2 * 8)
    assert parameter_count(UNet(width=8, upsample=2)) == base - (32 * 32 * 16 + 32) - (
        16 * 16 * 16 + 16)


def test_indivisible_plane_is_a_clear_error():
    model = UNet(width=4, depth=2)
    with pytest.raises(BadInputError, match="not divisible by 2\\*\\*depth = 4"):
        model(torch.rand(1, 5, 50, 520))
    with pytest.raises(BadInputError, match="expected \\[N, 5, H, W\\]"):
        model(torch.rand(1, 4, 64, 520))


@pytest.mark.parametrize("kw", [dict(norm="layer"), dict(upsample=4), dict(kernel_size=4),
                                dict(depth=-1)])
def test_bad_options_are_rejected(kw):
    with pytest.raises(BadInputError):
        UNet(**kw)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    model = UNet(width=4, bottom_convs=2, refine_blocks=1)
    x = torch.rand(2, 5, 16, 16)
    loss = (model(x) - torch.rand(2, 1, 16, 16)).abs().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_channels_last_gives_the_same_output():
    torch.manual_seed(1)
    model = UNet(width=4, bottom_convs=1).eval()
    x = torch.rand(2, 5, 16, 32)
    ref = model(x)
    cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-5)


def test_residual_network_starts_exactly_at_its_prior_channel():
    torch.manual_seed(0)
    net = UNet(in_channels=7, width=4, depth=2, bottom_convs=1, residual_channel=6).eval()
    x = torch.rand(2, 7, 12, 16)
    x[:, 6] = torch.rand(2, 12, 16) * 5 + 1e-3  # the prior: positive counts per LOR
    x[:, 6, :, 0] = 0.0  # and bins where it is 0 (gap columns)
    with torch.no_grad():
        y = net(x)
    # softplus(softplus^-1(p)) = p: no bias from the output activation; 0 becomes the floor
    torch.testing.assert_close(y[:, 0, :, 1:], x[:, 6, :, 1:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y[:, 0, :, 0], torch.full((2, 12), RESIDUAL_FLOOR))
    again = UNet(**net.config)  # as Predictor.from_checkpoint builds it
    again.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), y)
    assert "correcting input 6" in again.describe()


def test_residual_network_learns_a_correction():
    torch.manual_seed(0)
    net = UNet(in_channels=3, width=4, depth=1, bottom_convs=1, norm="none", residual_channel=2)
    x = torch.rand(4, 3, 8, 8) + 0.5
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    target = 1.5 * x[:, 2:3]
    first = None
    for _ in range(60):
        loss = ((net(x) - target) ** 2).mean()
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2 * first


def test_residual_channel_is_checked():
    with pytest.raises(BadInputError, match="prior_residual"):
        UNet(in_channels=5, residual_channel=5)
    with pytest.raises(BadInputError, match="prior_residual"):
        UNet(in_channels=5, out_channels=2, residual_channel=1)
    plain = UNet(in_channels=5, width=4)
    assert "residual_channel" not in plain.config  # older checkpoints keep their exact config
