"""Setting up a training run: config checks, the input layout, the network and its training
wrappers. The network's input layout follows the data and model sections
(:class:`badblock.inference.ChannelLayout`).
"""

from __future__ import annotations

import torch

from badblock.errors import BadInputError
from badblock.inference.layout import ChannelLayout


def check_train_config(t, device: torch.device) -> None:
    """Reject impossible values of the ``train`` section ``t`` (and CUDA without CUDA)."""
    if t.epochs < 1:
        raise BadInputError("train.epochs", f"must be >= 1, got {t.epochs}")
    if t.max_steps < 0:
        raise BadInputError("train.max_steps", f"must be >= 0, got {t.max_steps}")
    if not 0.0 <= t.ema < 1.0:
        raise BadInputError("train.ema", f"must be in [0, 1), got {t.ema}")
    if t.val_batches < 1:
        raise BadInputError("train.val_batches", f"must be >= 1, got {t.val_batches}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError("run.device", "CUDA was asked for but is not available")


def real_views(info: dict) -> tuple[int, int]:
    """``(first, stop)`` of the real views in the padded view axis of the data ``info``
    (:func:`badblock.data.build.build_data`)."""
    from badblock.physics.stack import view_padding

    before, _ = view_padding(info["views"], info["views_to"])
    return before, before + info["views"]


def layout_for(cfg):
    """The network's input layout of a run (:class:`badblock.inference.ChannelLayout`), checked
    against the task, the loss target and the augmentations it allows."""
    layout = ChannelLayout.of(cfg.data, cfg.model)
    if layout.per_lor and cfg.data.task != "inpaint":
        raise BadInputError("model.per_lor", "needs the inpaint task on a scanner's sinograms")
    a = cfg.augment
    if layout.per_lor and a.enabled and (a.view_roll > 0 or a.radial_flip > 0):
        # the sensitivity pattern of the bins is not symmetric under them
        raise BadInputError("model.per_lor", "needs augment.view_roll = 0 and "
                                             "augment.radial_flip = 0")
    if cfg.model.prior_residual and not (layout.prior_widths or layout.fill_prior):
        raise BadInputError("model.prior_residual", "needs model.prior_widths or "
                                                    "model.fill_prior")
    w = cfg.model.dead_weight
    if not 0.0 <= w <= 1.0:
        raise BadInputError("model.dead_weight", f"must be within [0, 1], got {w}")
    if w != 1.0 and not (cfg.model.prior_residual and layout.mask_channel):
        raise BadInputError("model.dead_weight", "needs model.prior_residual (the prior it "
                            "weighs against) and data.mask_channel (which bins are dead)")
    if layout.fill_prior:
        if not cfg.data.fills:
            raise BadInputError("model.fill_prior", "needs data.fills: the folder of damage "
                                "draws with their fills (badblock.data.fills.make_fills)")
        if a.enabled and a.dose > 0:
            # a thinned input would no longer be the scan its fill was made from
            raise BadInputError("model.fill_prior", "needs augment.dose = 0")
    if cfg.loss.target == "lost" and (cfg.data.task != "inpaint" or cfg.data.target != "measured"):
        raise BadInputError("loss.target", "'lost' needs the inpaint task with measured targets "
                                           "(data.target = measured)")
    if cfg.loss.target == "lost" and not cfg.loss.damaged_only:
        raise BadInputError("loss.target", "'lost' needs loss.damaged_only = true (nothing was "
                                           "lost on the other bins)")
    return layout


def build_network(cfg, layout: ChannelLayout, device: torch.device) -> torch.nn.Module:
    """The UNet for ``cfg`` (model section) and the input ``layout``, on ``device``, in the
    default (NCHW) memory format: :func:`to_memory_format` may change it."""
    from badblock.models import build_model

    residual = layout.prior_channel if cfg.model.prior_residual else None
    return build_model(cfg.model, layout.in_channels, residual).to(device)


def use_amp(amp: str, device: torch.device) -> bool:
    """bf16 autocast: ``train.amp`` 'bf16', or 'auto' on CUDA and on CPUs with bf16 units
    (:func:`badblock.utils.hardware.fast_formats`)."""
    from badblock.utils.hardware import fast_formats

    return amp == "bf16" or (amp == "auto" and fast_formats(device)[0])


def use_channels_last(setting, device: torch.device) -> bool:
    """Channels-last training: ``train.channels_last`` True or False, or 'auto': on CUDA and on
    CPUs with bf16 units (oneDNN's bf16 kernels want it). On other CPUs it depends on the
    network and the plane size (measured on a 2-core AVX2 EPYC, per CPU second: 1.2x faster
    for the demo's width-16 network on 36 x 64 planes, 1.2-1.7x slower for widths 16-64 on
    64 x 520), so 'auto' leaves it off there and a preset that gains sets it (mini does). A
    fixed rule, not a timing: two runs of one config train alike."""
    from badblock.utils.hardware import native_bf16

    if setting == "auto":
        return device.type == "cuda" or (device.type == "cpu" and native_bf16())
    return bool(setting)


def to_memory_format(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """``model`` channels-last (or back to NCHW), in place; returns it."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(memory_format=fmt)


def wrap_for_training(model: torch.nn.Module, env, device: torch.device,
                      compile: bool) -> torch.nn.Module:
    """What the training steps call: ``model`` itself, in DDP with several processes, then
    ``torch.compile`` with ``train.compile``."""
    net = model
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)
    if compile:
        net = torch.compile(net)
    return net


__all__ = ["check_train_config", "real_views", "layout_for", "build_network", "use_amp",
           "use_channels_last", "to_memory_format", "wrap_for_training"]
