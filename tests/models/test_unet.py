"""The UNet: shapes for every option, non-negative output, the tutorial's parameter count."""

from __future__ import annotations

import pytest
import torch

from badblock.config import load_config
from badblock.errors import BadInputError
from badblock.models import UNet, build_model, parameter_count

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


def _sensitivity_unet(**kw) -> UNet:
    net = UNet(in_channels=6, width=4, depth=2, bottom_convs=1, sensitivity_shape=(12, 16),
               per_lor_channels=5, **kw)
    with torch.no_grad():
        net.sensitivity.fill_(1.0)
        net.sensitivity[..., ::4] = 0.0  # "gap crystal" columns
        net.sensitivity[..., 1::4] = 0.5
    return net.eval()


def test_sensitivity_map_travels_with_the_weights_and_gaps_come_out_zero():
    net = _sensitivity_unet(prior_sigma=(1.5, 1.0), prior_residual=True)
    x = torch.rand(2, 6, 12, 16)
    x[:, 5] = 0.0
    x[:, 5, 3:7, 4:10] = 1.0  # the mask channel: a dead patch
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 1, 12, 16)
    assert torch.all(y[..., ::4] == 0) and torch.all(y[..., 2::4] > 0)
    again = UNet(**net.config)  # as Predictor.from_checkpoint builds it
    again.load_state_dict(net.state_dict())
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), y)
    assert again.config["sensitivity_shape"] == [12, 16]
    assert "sensitivity channel" in again.describe() and "residual" in again.describe()
    with pytest.raises(BadInputError, match="sensitivity map"):
        net(torch.rand(1, 6, 8, 16))


def test_prior_is_the_in_plane_normalised_convolution():
    net = _sensitivity_unet(prior_sigma=(1.0, 1.0))
    sens = net.sensitivity
    level = 3.0
    counts = level * sens.expand(1, 5, -1, -1).clone()  # a flat per-LOR activity of 3
    mask = torch.zeros(1, 1, 12, 16)
    mask[..., 4:8, 6:10] = 1.0  # a dead patch: those counts are gone
    counts[:, 2:3] = counts[:, 2:3] * (1 - mask)
    x = torch.cat([counts / sens.clamp(min=1e-6) * (sens > 0), mask], 1)
    prior = net.prior(x, sens)
    # a flat activity is recovered exactly wherever anything is near, the dead patch included
    torch.testing.assert_close(prior, torch.full_like(prior, level), rtol=1e-4, atol=1e-4)


def test_per_lor_and_prior_options_are_checked():
    with pytest.raises(BadInputError, match="per_lor"):
        UNet(in_channels=6, per_lor_channels=5)  # no sensitivity map
    with pytest.raises(BadInputError, match="prior_sigma"):
        UNet(in_channels=5, sensitivity_shape=(12, 16), per_lor_channels=5, prior_sigma=(1, 1))
    with pytest.raises(BadInputError, match="prior_residual"):
        UNet(in_channels=6, sensitivity_shape=(12, 16), per_lor_channels=5, prior_residual=True)
    plain = UNet(in_channels=5, width=4)
    assert "sensitivity_shape" not in plain.config and plain.sensitivity is None


def _stack_unet(**kw) -> UNet:
    """Per-LOR UNet whose input carries the mask of every one of its 5 planes."""
    net = UNet(in_channels=10, width=4, depth=2, bottom_convs=1, sensitivity_shape=(12, 16),
               per_lor_channels=5, mask_planes=5, **kw)
    with torch.no_grad():
        net.sensitivity.fill_(1.0)
        net.sensitivity[..., ::4] = 0.0
        net.sensitivity[..., 1::4] = 0.5
    return net.eval()


def _stack_input(sens: torch.Tensor, levels: list[float], mask: torch.Tensor) -> torch.Tensor:
    """Per-LOR input ``[1, 10, 12, 16]``: planes of flat per-LOR activity ``levels`` (counts =
    level * sens), damaged by ``mask`` ``[1, 5, 12, 16]``, then the 5 mask planes."""
    counts = torch.stack([lv * sens[0, 0] for lv in levels])[None] * (1 - mask)
    per_lor = counts / sens.clamp(min=1e-6) * (sens > 0)
    return torch.cat([per_lor, mask], 1)


def test_3d_prior_fills_a_dead_centre_plane_from_its_neighbours():
    net = _stack_unet(prior_sigma=(0.7, 1.0, 1.0))
    sens = net.sensitivity
    mask = torch.zeros(1, 5, 12, 16)
    mask[:, 2, 2:10, 2:14] = 1.0  # the centre plane loses a patch far wider than the kernel
    mask[:, 1, 2:10, 2:8] = 0.5  # a neighbour loses half its counts in part of it
    x = _stack_input(sens, [3.0] * 5, mask)
    prior = net.prior(x, sens)
    # every plane's own keep fraction is divided out: the flat activity comes back exactly,
    # in the middle of the centre plane's dead patch too
    torch.testing.assert_close(prior, torch.full_like(prior, 3.0), rtol=1e-4, atol=1e-4)
    # the in-plane (2-D) estimate of the same input has nothing there
    flat = _stack_unet(prior_sigma=(1.0, 1.0))
    assert float(flat.prior(x, sens)[0, 0, 6, 8]) == 0.0
    assert float(flat.prior(x, sens)[0, 0, 0, 0]) == pytest.approx(3.0, rel=1e-4)


def test_3d_prior_brings_neighbouring_planes_to_the_centre_level():
    # compressed sinograms: neighbouring planes hold 2 or 3 ring pairs, so twice the counts
    net = _stack_unet(prior_sigma=(0.7, 1.0, 1.0))
    sens = net.sensitivity
    mask = torch.zeros(1, 5, 12, 16)
    mask[:, 2, 2:10, 2:14] = 1.0
    x = _stack_input(sens, [6.0, 3.0, 3.0, 3.0, 6.0], mask)
    x[:, 1] *= 2.0  # plane 1 too, after the damage
    torch.testing.assert_close(net.prior(x, sens), torch.full((1, 1, 12, 16), 3.0),
                               rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 1, 12, 16) and torch.all(y[..., ::4] == 0)
    again = UNet(**net.config)  # as Predictor.from_checkpoint builds it
    again.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), y)
    assert again.config["mask_planes"] == 5 and "5 mask planes" in again.describe()


def test_mask_planes_options_are_checked():
    with pytest.raises(BadInputError, match="prior_sigma"):  # 3 sigmas, centre mask only
        UNet(in_channels=6, sensitivity_shape=(12, 16), per_lor_channels=5,
             prior_sigma=(0.7, 1, 1))
    with pytest.raises(BadInputError, match="mask_stack"):  # not one mask per count plane
        UNet(in_channels=8, sensitivity_shape=(12, 16), per_lor_channels=5, mask_planes=3)
    # the centre plane's mask is found among the 5 for the in-plane prior
    net = _stack_unet(prior_sigma=(1.0, 1.0))
    mask = torch.zeros(1, 5, 12, 16)
    mask[:, 2, 4:8, 6:10] = 1.0
    x = _stack_input(net.sensitivity, [3.0] * 5, mask)
    torch.testing.assert_close(net.prior(x, net.sensitivity), torch.full((1, 1, 12, 16), 3.0),
                               rtol=1e-4, atol=1e-4)
    # models from before the option keep their exact config
    assert "mask_planes" not in _sensitivity_unet(prior_sigma=(1.0, 1.0)).config
