"""Apply a trained checkpoint to context stacks: the input layout, the network, counts again.

Used by ``repair`` and ``evaluate``; training writes the checkpoints it reads
(:mod:`badblock.train.checkpoint`) and builds its batches with the same input layout
(:class:`badblock.inference.layout.ChannelLayout`), so that the normalisation at repair time is
exactly the one the network was trained with: from the damaged input only.

View padding: a scan's ``V`` views are padded to ``Vp`` before the network (a multiple of
``2**depth``): ``Vp = predictor.views_to`` (the training value) or
``badblock.physics.stack.padded_views(V, predictor.multiple)``, plus ``predictor.margin`` views
on each side that only the prior channel reads; stacks are built that wide
(``badblock.physics.stack.plane_stack(..., views_to=Vp + 2 * margin)``) and the predictor
returns the ``Vp`` views; the views added are
``badblock.physics.stack.view_padding(V, Vp) -> (before, after)`` and the caller crops
``[before:before + V]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from badblock.errors import BadInputError
from badblock.inference.layout import ChannelLayout


class Predictor:
    """A trained network ready for inference on one device.

    ``data`` is the checkpoint's data dict: the input layout (``context``, ``normalise``,
    ``mask_channel``, ``mask_stack``, ``per_lor``, ``prior_widths``, ``margin``; absent keys
    of older checkpoints take the plain layout's values), ``multiple`` (view and bin sides
    must divide by it), ``views_to`` (the padded view count used in training; 0 = unknown)
    and what training recorded besides (views, bins, task, target, scanner). Attributes:
    ``layout``, ``context``, ``margin``, ``per_lor``, ``mask_channel``, ``multiple``,
    ``views_to``, ``model`` (eval mode), ``device``, ``amp`` (bf16 autocast; default on CUDA
    only), ``data`` (a copy of the dict).

    Call it with damaged counts ``[N, 2k+1, Vp + 2 margin, B]``, masks alike (lost fraction
    0..1; required with ``mask_channel``) and sensitivity stacks alike (real LORs per bin,
    :func:`badblock.physics.mask.real_lor_count`; required with ``per_lor``): it returns the
    repaired counts ``[N, Vp, B]`` of the centre planes. numpy in -> numpy float32 out;
    tensors in -> a float32 tensor on the predictor's device out.
    """

    def __init__(self, model: torch.nn.Module, data: dict, device: torch.device,
                 amp: bool | None = None):
        self.model = model.to(device).eval()
        self.data = dict(data)
        self.device = torch.device(device)
        self.layout = ChannelLayout.from_dict(data)
        self.context = self.layout.context
        self.margin = self.layout.margin
        self.per_lor = self.layout.per_lor
        self.mask_channel = self.layout.mask_channel
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
        config = state.get("model_config") or {}
        if "sensitivity_shape" in config or "prior_sigma" in config:
            raise BadInputError(path, "checkpoint of an older badblock (sensitivity and prior "
                                      "inside the network): train it again with this version")
        try:
            model = UNet(**config)
        except (TypeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BadInputError(path, f"its model_config does not build the UNet "
                                      f"({first[:200]})") from None
        load_weights(model, state["model"], path, "was it written for this UNet?")
        predictor = cls(model, state["data"], torch.device(device), amp=amp)
        predictor.path = Path(path)  # named by the checks that refuse what it predicts
        return predictor

    def _tensor(self, a):
        t = torch.as_tensor(np.asarray(a, np.float32) if isinstance(a, np.ndarray) else a)
        return t.to(self.device, torch.float32)

    @torch.no_grad()
    def __call__(self, stacks, masks=None, sens=None):
        """Damaged counts ``[N, 2k+1, Vp + 2 margin, B]`` (+ masks and sensitivity alike) ->
        repaired counts ``[N, Vp, B]``.

        numpy in, numpy float32 out; tensors in, a float32 tensor on the predictor's device out.
        The caller crops the view padding (``badblock.physics.stack.view_padding``).
        """
        as_numpy = isinstance(stacks, np.ndarray)
        inp = self._tensor(stacks)
        m = None if masks is None else self._tensor(masks)
        s = None if sens is None else self._tensor(sens)
        x, _, out_scale = self.layout.inputs(inp, m, s)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            y = self.model(x)
        out = (y.float() * out_scale)[:, 0]
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
