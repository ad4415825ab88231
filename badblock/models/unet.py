"""The UNet of the 2019 Siemens internship work this project grew from, every part configurable.

Shapes: input ``[N, in_channels, H, W]`` (for sinograms ``H`` = views padded to a multiple of
``2**depth``, ``W`` = radial bins), output ``[N, out_channels, H, W]``, non-negative (softplus).
The input channels are laid out by :mod:`badblock.inference.layout`.

The default configuration is that original network exactly as its ``forward`` ran it:

- down block 1: three 3x3 convs (no bias) + norm + LeakyReLU(0.2), 5 -> 64 channels;
- down blocks 2, 3: a 3x3 stride-2 conv (no bias, no norm, keeps the channel count), then three
  convs + norm + LeakyReLU(0.2), doubling the channels (128, 256);
- five bottom convs + norm + LeakyReLU(0.2) at 256 channels;
- up blocks: 4x4 stride-2 transposed conv (with bias), concatenation ``[upsampled, skip]``, three
  convs (no bias) + LeakyReLU(0.2) -- *without* norm: the original defined norms there but its
  forward did not use them (``up_norm=True`` adds them);
- two final 3x3 convs (ReLU between, the last with bias) and softplus with beta 5.

Optional (``residual_channel = i``, off by default): the network corrects input channel ``i``
(an estimate of the output, e.g. the classical gap-filling prior that
:class:`badblock.inference.ChannelLayout` appends) instead of replacing it: the output is
``softplus(softplus^-1(x_i) + h)`` with ``h`` the last convolution's output, whose weights and bias
start at zero, so that an untrained network returns ``x_i`` exactly (no bias from the output
activation) and training only learns the correction. ``x_i`` is clamped to at least
``RESIDUAL_FLOOR`` so its inverse softplus stays finite.

The original module also registered layers its forward never called (the stride-2 conv of the
first down block, the up blocks' and last norms); they hold parameters but do nothing, so they
are left out here and :func:`parameter_count` counts only what runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from badblock.errors import BadInputError

NORMS = ("batch", "instance", "none")
RESIDUAL_FLOOR = 1e-4  # smallest prior value whose inverse softplus is taken
UPSAMPLE_MODES = {1: "transposed", 2: "nearest", 3: "area"}  # the original's up-block IDs


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        # affine so that instance norm can learn the same scale/shift as batch norm
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class ConvStack(nn.Sequential):
    """``n`` convs of kernel ``k`` (same padding; bias by default only without norm) + norm +
    LeakyReLU."""

    def __init__(self, c_in: int, c_out: int, n: int, k: int, norm: str, slope: float = 0.2,
                 bias: bool | None = None):
        layers: list[nn.Module] = []
        for i in range(n):
            layers.append(nn.Conv2d(c_in if i == 0 else c_out, c_out, k, padding=k // 2,
                                    bias=norm == "none" if bias is None else bias))
            layers.append(_norm(norm, c_out))
            layers.append(nn.LeakyReLU(slope))
        super().__init__(*layers)


class DownBlock(nn.Module):
    """Optional stride-2 conv (channel count kept), then three convs to ``c_out`` channels."""

    def __init__(self, c_in: int, c_out: int, down: bool, k: int, norm: str):
        super().__init__()
        self.down = nn.Conv2d(c_in, c_in, k, stride=2, padding=k // 2, bias=False) if down else None
        self.convs = ConvStack(c_in, c_out, 3, k, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down is not None:
            x = self.down(x)
        return self.convs(x)


class UpBlock(nn.Module):
    """Upsample ``x`` by 2, concatenate ``[x, skip]``, three convs to ``c_out`` channels."""

    def __init__(self, c_skip: int, c_in: int, c_out: int, mode: int, k: int, norm: str):
        super().__init__()
        self.mode = mode
        self.up = nn.ConvTranspose2d(c_in, c_in, 4, stride=2, padding=1) if mode == 1 else None
        # the original up-block convs have neither bias nor (in its forward) norm
        self.convs = ConvStack(c_skip + c_in, c_out, 3, k, norm, bias=False)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.up is not None:
            x = self.up(x)
        else:
            x = F.interpolate(x, scale_factor=2.0, mode=UPSAMPLE_MODES[self.mode])
        return self.convs(torch.cat((x, skip), dim=1))


class ResidualBlock(nn.Module):
    """ResNet basic block (conv-norm-LeakyReLU-conv-norm + identity) for refinement at the end."""

    def __init__(self, channels: int, k: int, norm: str):
        super().__init__()
        bias = norm == "none"
        self.conv1 = nn.Conv2d(channels, channels, k, padding=k // 2, bias=bias)
        self.norm1 = _norm(norm, channels)
        self.conv2 = nn.Conv2d(channels, channels, k, padding=k // 2, bias=bias)
        self.norm2 = _norm(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.norm1(self.conv1(x)), 0.2)
        return F.leaky_relu(self.norm2(self.conv2(out)) + x, 0.2)


class UNet(nn.Module):
    """The original network; see the module docstring. ``depth`` = number of downsamplings."""

    def __init__(self, in_channels: int = 5, out_channels: int = 1, width: int = 64,
                 depth: int = 2, bottom_convs: int = 5, kernel_size: int = 3,
                 norm: str = "batch", upsample: int = 1, refine_blocks: int = 0,
                 softplus_beta: float = 5.0, up_norm: bool = False,
                 residual_channel: int | None = None):
        super().__init__()
        self.config = unet_config(
            in_channels=in_channels, out_channels=out_channels, width=width, depth=depth,
            bottom_convs=bottom_convs, kernel_size=kernel_size, norm=norm, upsample=upsample,
            refine_blocks=refine_blocks, softplus_beta=softplus_beta, up_norm=up_norm,
            residual_channel=residual_channel)
        self.residual_channel = self.config.get("residual_channel")
        self.depth = depth
        k = kernel_size
        widths = [width * 2**i for i in range(depth + 1)]
        self.downs = nn.ModuleList(
            DownBlock(in_channels if i == 0 else widths[i - 1], widths[i], i > 0, k, norm)
            for i in range(depth + 1))
        self.bottom = ConvStack(widths[-1], widths[-1], bottom_convs, k, norm)
        self.ups = nn.ModuleList(
            UpBlock(widths[i], widths[i + 1], widths[i], upsample, k, norm if up_norm else "none")
            for i in reversed(range(depth)))
        self.refine = nn.Sequential(*(ResidualBlock(width, k, norm) for _ in range(refine_blocks)))
        # the original's final convs are always 3x3, whatever the kernel size elsewhere
        self.last_conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.last_conv2 = nn.Conv2d(width, out_channels, 3, padding=1)
        self.softplus = nn.Softplus(beta=softplus_beta)
        if self.residual_channel is not None:
            nn.init.zeros_(self.last_conv2.weight)
            nn.init.zeros_(self.last_conv2.bias)

    @property
    def multiple(self) -> int:
        """Input height and width must be divisible by this (``2**depth``)."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config["in_channels"]:
            raise BadInputError("model input", f"expected [N, {self.config['in_channels']}, H, W], "
                                f"got {list(x.shape)}")
        h, w = x.shape[-2:]
        m = self.multiple
        if h % m or w % m:
            raise BadInputError("model input", f"plane size {h}x{w} is not divisible by "
                                f"2**depth = {m} (pad the views, e.g. with data views_to, or lower "
                                "model.depth)")
        base = None
        if self.residual_channel is not None:
            beta = self.softplus.beta
            z = x[:, self.residual_channel:self.residual_channel + 1].float()
            z = z.clamp(min=RESIDUAL_FLOOR)
            # softplus^-1(z) = z + log(1 - exp(-beta z)) / beta, written to stay finite
            base = z + torch.log(-torch.expm1(-beta * z)) / beta
        skips = []
        for block in self.downs:
            x = block(x)
            skips.append(x)
        x = self.bottom(x)
        for block, skip in zip(self.ups, reversed(skips[:-1]), strict=True):
            x = block(skip, x)
        x = self.refine(x)
        x = self.last_conv2(F.relu(self.last_conv1(x)))
        if base is not None:
            x = x.float() + base
        return self.softplus(x)

    def describe(self) -> str:
        """One line for logs: the configuration and the parameter count."""
        c = self.config
        up = UPSAMPLE_MODES[c["upsample"]]
        rc = self.residual_channel
        return (f"UNet {c['in_channels']}->{c['out_channels']} width {c['width']} depth "
                f"{c['depth']} bottom {c['bottom_convs']} kernel {c['kernel_size']} norm "
                f"{c['norm']} up {up}{' +norm' if c['up_norm'] else ''} refine "
                f"{c['refine_blocks']} softplus(beta={c['softplus_beta']:g})"
                f"{'' if rc is None else f' correcting input {rc}'}: "
                f"{parameter_count(self):,} parameters; input sides multiple of {self.multiple}")


def unet_config(*, in_channels: int, out_channels: int, width: int, depth: int,
                bottom_convs: int, kernel_size: int, norm: str, upsample: int,
                refine_blocks: int, softplus_beta: float, up_norm: bool,
                residual_channel: int | None = None) -> dict:
    """Check :class:`UNet`'s arguments (a :class:`BadInputError` naming the config key) and
    return its ``config``: the keyword arguments that rebuild it (``residual_channel`` only when
    used)."""
    _check("model.in_planes", in_channels >= 1, f"in_channels must be >= 1, got {in_channels}")
    _check("model.out_channels", out_channels >= 1, f"must be >= 1, got {out_channels}")
    _check("model.width", width >= 1, f"must be >= 1, got {width}")
    _check("model.depth", depth >= 0, f"must be >= 0, got {depth}")
    _check("model.bottom_convs", bottom_convs >= 0, f"must be >= 0, got {bottom_convs}")
    _check("model.kernel_size", kernel_size >= 1 and kernel_size % 2 == 1,
           f"must be odd and >= 1 (same padding), got {kernel_size}")
    _check("model.norm", norm in NORMS, f"must be one of {NORMS}, got {norm!r}")
    _check("model.upsample", upsample in UPSAMPLE_MODES,
           f"must be 1 (transposed conv), 2 (nearest) or 3 (area), got {upsample!r}")
    _check("model.refine_blocks", refine_blocks >= 0, f"must be >= 0, got {refine_blocks}")
    _check("model.softplus_beta", softplus_beta > 0, f"must be > 0, got {softplus_beta}")
    config = dict(in_channels=in_channels, out_channels=out_channels, width=width, depth=depth,
                  bottom_convs=bottom_convs, kernel_size=kernel_size, norm=norm,
                  upsample=upsample, refine_blocks=refine_blocks, softplus_beta=softplus_beta,
                  up_norm=up_norm)
    if residual_channel is not None:
        _check("model.prior_residual", 0 <= int(residual_channel) < in_channels
               and out_channels == 1, f"channel {residual_channel} is not one of the "
               f"{in_channels} inputs (or the output has more than one channel)")
        config["residual_channel"] = int(residual_channel)
    return config


def _check(key: str, ok: bool, problem: str) -> None:
    if not ok:
        raise BadInputError(key, problem)


def parameter_count(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_model(cfg, in_channels: int | None = None,
                residual_channel: int | None = None) -> UNet:
    """A :class:`UNet` from a ``ModelConfig``; ``in_channels`` (from the input layout,
    :class:`badblock.inference.ChannelLayout`) overrides ``cfg.in_planes``;
    ``residual_channel`` makes the network correct that input channel (the prior)."""
    return UNet(in_channels=cfg.in_planes if in_channels is None else in_channels,
                out_channels=getattr(cfg, "out_channels", 1), width=cfg.width, depth=cfg.depth,
                bottom_convs=cfg.bottom_convs, kernel_size=cfg.kernel_size, norm=cfg.norm,
                upsample=cfg.upsample, refine_blocks=cfg.refine_blocks,
                softplus_beta=cfg.softplus_beta, up_norm=getattr(cfg, "up_norm", False),
                residual_channel=residual_channel)
