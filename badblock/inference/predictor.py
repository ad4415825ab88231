"""Apply a trained checkpoint to context stacks: normalise, network, inverse normalise.

Used by ``repair`` and ``evaluate``; training writes the checkpoints it reads
(:mod:`badblock.train.checkpoint`) and builds its batches with the same input layout
(:mod:`badblock.inference.layout`), so that the normalisation at repair time is exactly the
one the network was trained with: from the damaged input only.

View padding: a scan's ``V`` views are padded to ``Vp`` before the network (a multiple of
``2**depth``): ``Vp = predictor.views_to`` (the training value) or
``badblock.physics.stack.padded_views(V, predictor.multiple)``; the views added are
``badblock.physics.stack.view_padding(V, Vp) -> (before, after)`` and the caller crops
``[before:before + V]`` from the output.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from badblock.errors import BadInputError
from badblock.inference.layout import network_input, normalise_scale


class Predictor:
    """A trained network ready for inference on one device.

    ``data`` is the checkpoint's data dict: ``context`` (k), ``normalise`` (default ``max``),
    ``mask_channel``, ``mask_stack`` (absent in checkpoints from before the option: False),
    ``multiple`` (view and bin sides must divide by it), ``views_to`` (the padded view count
    used in training; 0 = unknown), and what training recorded besides (views, bins, task,
    target, scanner). Attributes: those values, ``model`` (eval mode), ``device``, ``amp``
    (bf16 autocast; default on CUDA only), ``data`` (a copy of the dict).

    Call it with damaged counts ``[N, 2k+1, Vp, B]`` and masks ``[N, 2k+1, Vp, B]`` (lost
    fraction 0..1; required when ``mask_channel``, else may be None): it returns repaired
    counts ``[N, Vp, B]`` of the centre planes. numpy in -> numpy float32 out; tensors in ->
    a float32 tensor on the predictor's device out.
    """

    def __init__(self, model: torch.nn.Module, data: dict, device: torch.device,
                 amp: bool | None = None):
        self.model = model.to(device).eval()
        self.data = dict(data)
        self.device = torch.device(device)
        self.context = int(data["context"])
        self.normalise = str(data.get("normalise", "max"))
        self.mask_channel = bool(data.get("mask_channel", False))
        self.mask_stack = bool(data.get("mask_stack", False))
        self.multiple = int(data.get("multiple", 1))
        self.views_to = int(data.get("views_to", 0))
        self.amp = (self.device.type == "cuda") if amp is None else amp

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        amp: bool | None = None) -> Predictor:
        """Rebuild the UNet of a checkpoint (``UNet(**model_config)`` + its ``model`` weights:
        with ``train.ema`` those are the averaged weights) on ``device``."""
        from badblock.models import UNet
        from badblock.utils.checkpoint import load_checkpoint, load_weights

        state = load_checkpoint(path, map_location="cpu")
        try:
            model = UNet(**state["model_config"])
        except (TypeError, ValueError) as exc:
            raise BadInputError(path, f"its model_config does not build the UNet "
                                      f"({str(exc).splitlines()[0][:200]})") from None
        load_weights(model, state["model"], path, "was it written for this UNet?")
        predictor = cls(model, state["data"], torch.device(device), amp=amp)
        predictor.path = Path(path)  # named by the checks that refuse what it predicts
        return predictor

    @torch.no_grad()
    def __call__(self, stacks, masks=None):
        """Damaged counts ``[N, 2k+1, Vp, B]`` (+ masks alike) -> repaired counts ``[N, Vp, B]``.

        numpy in, numpy float32 out; tensors in, a float32 tensor on the predictor's device out.
        The caller crops the view padding (``badblock.physics.stack.view_padding``).
        """
        as_numpy = isinstance(stacks, np.ndarray)
        inp = torch.as_tensor(np.asarray(stacks, np.float32) if as_numpy else stacks)
        inp = inp.to(self.device, torch.float32)
        c = 2 * self.context + 1
        if inp.ndim != 4 or inp.shape[1] != c:
            raise BadInputError("stacks", f"expected [N, {c}, V, B] context stacks, got "
                                          f"{list(inp.shape)}")
        m = None
        if masks is not None:
            m = torch.as_tensor(np.asarray(masks, np.float32) if isinstance(masks, np.ndarray)
                                else masks).to(self.device, torch.float32)
        scale = normalise_scale(inp, self.normalise)
        x = network_input(inp, m, scale, self.context, self.mask_channel, self.mask_stack)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            y = self.model(x)
        out = (y.float() * scale)[:, 0]
        return out.cpu().numpy() if as_numpy else out


def load_predictor(checkpoint: str | os.PathLike, device: str = "auto",
                   threads: int = 0) -> Predictor:
    """The checkpoint's :class:`Predictor` on ``device``.

    ``auto`` picks this process's GPU (by local rank under torchrun/Slurm) when CUDA is there,
    else the CPU; ``threads`` > 0 sets torch's intra-op threads.
    """
    from badblock.utils.ranks import detect_env, select_device

    if not Path(checkpoint).is_file():
        raise BadInputError(checkpoint, "checkpoint not found")
    if threads > 0:
        torch.set_num_threads(threads)
    return Predictor.from_checkpoint(checkpoint, select_device(device, detect_env()))


__all__ = ["Predictor", "load_predictor"]
