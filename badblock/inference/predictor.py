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
from badblock.metrics import DEAD_EPS


class Predictor:
    """A trained network ready for inference on one device.

    ``data`` is the checkpoint's data dict: the input layout (``context``, ``normalise``,
    ``mask_channel``, ``mask_stack``, ``per_lor``, ``prior_widths``, ``margin``; absent keys
    of older checkpoints take the plain layout's values), ``multiple`` (view and bin sides
    must divide by it), ``views_to`` (the padded view count used in training; 0 = unknown)
    and what training recorded besides (views, bins, task, target, scanner). Attributes:
    ``layout``, ``context``, ``margin``, ``per_lor``, ``mask_channel``, ``multiple``,
    ``views_to``, ``model`` (eval mode), ``device``, ``amp`` (bf16 autocast),
    ``channels_last``, ``data`` (a copy of the dict). ``amp`` and ``channels_last`` default to
    the device's fast formats (:func:`badblock.utils.hardware.fast_formats`: bf16 on CUDA and
    on CPUs with bf16 units, channels-last everywhere); ``amp`` may be switched off later
    (repair does when bf16 disagrees with float32, :meth:`bf16_error`).

    ``dead_weight`` (the checkpoint's ``model.dead_weight``, 1 for older ones) and
    ``partial_weight`` (1) are the output rule of a residual network, attributes a caller may
    change (repair's self-check, :mod:`badblock.inference.selfcheck`, sets both per scan): with
    ``p`` the prior it corrects (the model-based fill or the normconv estimate, in counts) and
    ``o`` its output, a bin of the centre plane with ``f >= 1 - badblock.metrics.DEAD_EPS``
    gets ``p + dead_weight (o - p)``, one with ``0 < f`` below that ``p + partial_weight
    (o - p)``; every other bin gets ``o``.

    Call it with damaged counts ``[N, 2k+1, Vp + 2 margin, B]``, masks alike (lost fraction
    0..1; required with ``mask_channel``) and sensitivity stacks alike (real LORs per bin,
    :func:`badblock.physics.mask.real_lor_count`; required with ``per_lor``): it returns the
    repaired counts ``[N, Vp, B]`` of the centre planes. numpy in -> numpy float32 out;
    tensors in -> a float32 tensor on the predictor's device out.
    """

    def __init__(self, model: torch.nn.Module, data: dict, device: torch.device,
                 amp: bool | None = None, channels_last: bool | None = None):
        from badblock.utils.hardware import fast_formats

        self.device = torch.device(device)
        bf16, last = fast_formats(self.device)
        self.amp = bf16 if amp is None else bool(amp)
        self.channels_last = last if channels_last is None else bool(channels_last)
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.data = dict(data)
        self.layout = ChannelLayout.from_dict(data)
        self.context = self.layout.context
        self.margin = self.layout.margin
        self.per_lor = self.layout.per_lor
        self.mask_channel = self.layout.mask_channel
        self.multiple = int(data.get("multiple", 1))
        self.views_to = int(data.get("views_to", 0))
        self.dead_weight = float(data.get("dead_weight", 1.0))
        self.partial_weight = 1.0
        self._pinned: dict[str, torch.Tensor] = {}

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

    def bytes_per_image(self, views: int, bins: int) -> int:
        """Host or device memory one plane image needs in a forward pass, bytes: measured peaks
        are 10-13 float32 activations of ``width x views x bins`` (the level-0 skip, the
        concatenation before the last up block, the working tensors); 16 is the margin."""
        width = int(getattr(self.model, "config", {}).get("width", 64))
        return 16 * width * int(views) * int(bins) * 4

    def _to_device(self, a, name: str) -> torch.Tensor:
        """float32 tensor on the device; numpy goes through a reused pinned buffer to CUDA."""
        if not isinstance(a, np.ndarray):
            return a.to(self.device, torch.float32)
        a = np.asarray(a, np.float32)
        if self.device.type != "cuda":
            return torch.from_numpy(np.ascontiguousarray(a))
        buf = self._pinned.get(name)
        if buf is None or buf.numel() < a.size:
            buf = self._pinned[name] = torch.empty(a.size, pin_memory=True)
        host = buf[:a.size].view(a.shape)
        host.numpy()[...] = a
        return host.to(self.device, non_blocking=True)

    def __call__(self, stacks, masks=None, sens=None, fill=None):
        """Damaged counts ``[N, 2k+1, Vp + 2 margin, B]`` (+ masks and sensitivity alike, + the
        model-based fill of the centre planes ``[N, 1, Vp + 2 margin, B]``) -> repaired counts
        ``[N, Vp, B]``.

        numpy in, numpy float32 out; tensors in, a float32 tensor on the predictor's device out.
        The caller crops the view padding (``badblock.physics.stack.view_padding``).
        """
        return self.run(stacks, masks, sens, self.amp, fill)

    def run(self, stacks, masks=None, sens=None, bf16: bool = False, fill=None):
        """:meth:`__call__` with bf16 autocast on or off for this call."""
        as_numpy = isinstance(stacks, np.ndarray)
        with torch.inference_mode():
            inp = self._to_device(stacks, "stacks")
            m = None if masks is None else self._to_device(masks, "masks")
            s = None if sens is None else self._to_device(sens, "sens")
            fl = None if fill is None else self._to_device(fill, "fill")
            x, _, out_scale = self.layout.inputs(inp, m, s, fl)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                y = self.model(x)
            out = (y.float() * out_scale)[:, 0]
            if self.dead_weight != 1.0 or self.partial_weight != 1.0:
                out = self._output_rule(out, x, m, out_scale, fl)
            if as_numpy:
                return out.cpu().numpy()
        return out.clone()  # outside inference mode: an ordinary tensor the caller may modify

    def _output_rule(self, out: torch.Tensor, x: torch.Tensor, m: torch.Tensor | None,
                     out_scale: torch.Tensor, fill: torch.Tensor | None) -> torch.Tensor:
        """``out`` ``[N, Vp, B]`` with its damaged bins moved to ``p + w (out - p)``, ``w`` the
        weight of the bin's class; ``p`` is the fill itself when the network corrects it (so
        that ``w = 0`` repairs those bins bit for bit as the fill does), else the prior
        channel back in counts."""
        pc = self.layout.prior_channel
        if pc is None or m is None:
            raise BadInputError(getattr(self, "path", "checkpoint"), "an output weight below 1 "
                                "needs a residual network with the mask channel (its prior "
                                "and f)")
        crop = slice(self.margin, m.shape[2] - self.margin)
        if self.layout.fill_prior:
            prior = fill[:, 0, crop].float()
        else:
            prior = x[:, pc].float() * out_scale[:, 0]
        return weigh(out, prior, m[:, self.context, crop].float(), self.partial_weight,
                     self.dead_weight)

    def bf16_error(self, stacks, masks, region: np.ndarray, sens=None, fill=None) -> float:
        """Relative RMS difference of the bf16 and the float32 prediction over ``region``
        (bool ``[N, Vp, B]``, e.g. the bins repair takes from the network):
        ``sqrt(sum (bf16 - fp32)^2 / sum fp32^2)``; 0 for an empty region."""
        lo = np.asarray(self.run(stacks, masks, sens, True, fill), np.float64)[region]
        hi = np.asarray(self.run(stacks, masks, sens, False, fill), np.float64)[region]
        den = float((hi ** 2).sum())
        return float(np.sqrt(((lo - hi) ** 2).sum() / den)) if den > 0 else 0.0


def weigh(out: torch.Tensor, prior: torch.Tensor, f: torch.Tensor, partial_weight: float,
          dead_weight: float) -> torch.Tensor:
    """The output rule of a residual network: ``out`` with its damaged bins moved to
    ``prior + w (out - prior)``, ``w`` the weight of the bin's class (fully dead where the lost
    fraction ``f >= 1 - DEAD_EPS``, partly damaged where ``0 < f`` below it); tensors of one
    shape (or broadcasting), float32. A weight of 1 keeps the network's bits."""
    dead = f >= 1.0 - DEAD_EPS
    if dead_weight != 1.0:
        out = torch.where(dead, prior + dead_weight * (out - prior), out)
    if partial_weight != 1.0:
        out = torch.where((f > 0) & ~dead, prior + partial_weight * (out - prior), out)
    return out


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
