"""Apply a trained checkpoint to context stacks: normalise, network, inverse normalise.

Used by ``repair`` (and by validation during training, through :func:`normalise_scale`), so the
normalisation at repair time is exactly the one the network was trained with. It only uses
the damaged input (SPEC section 6): default the tutorial's ``x / (x.max() + 1e-8)`` over the
input stack of each sample.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from badblock.errors import BadInputError

EPS = 1e-8
NORMALISE_MODES = ("max", "mean", "none")


def normalise_scale(inp: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-sample scale ``[N, 1, 1, 1]`` of a damaged input stack ``[N, C, V, B]`` (counts).

    ``max``: stack maximum + 1e-8 (tutorial); ``mean``: stack mean + 1e-8; ``none``: 1.
    Network input = counts / scale; network output * scale = counts.
    """
    n = inp.shape[0]
    if mode == "max":
        return inp.reshape(n, -1).amax(dim=1).view(n, 1, 1, 1) + EPS
    if mode == "mean":
        return inp.reshape(n, -1).mean(dim=1).view(n, 1, 1, 1) + EPS
    if mode == "none":
        return torch.ones((n, 1, 1, 1), dtype=inp.dtype, device=inp.device)
    raise BadInputError("data.normalise", f"must be one of {NORMALISE_MODES}, not {mode!r}")


def network_input(inp: torch.Tensor, mask: torch.Tensor | None, scale: torch.Tensor,
                  context: int, mask_channel: bool, mask_stack: bool = False) -> torch.Tensor:
    """``[N, 2k+1 (+1 | +2k+1), V, B]``: normalised stack ``inp / scale``, plus the lost
    fraction f of the centre plane (``mask_channel``) or of all 2k+1 planes (and
    ``mask_stack``) from ``mask`` ``[N, 2k+1, V, B]``."""
    x = inp / scale
    if mask_channel:
        if mask is None:
            raise BadInputError("mask", "this checkpoint was trained with the mask channel: "
                                        "give the mask of the damaged scan")
        if mask_stack and mask.shape[1] != inp.shape[1]:
            raise BadInputError("mask", f"expected {inp.shape[1]} mask planes (one per input "
                                        f"plane), got {mask.shape[1]}")
        m = mask if mask_stack else mask[:, context:context + 1]
        x = torch.cat([x, m.to(x.dtype)], dim=1)
    return x


class Predictor:
    """A trained network ready for inference on one device.

    Attributes: ``context`` (k), ``multiple`` (view/bin sides must divide by it),
    ``views_to`` (the padded view count used in training), ``mask_channel``, ``mask_stack``
    (all 2k+1 mask planes; False for checkpoints from before the option), ``normalise``,
    ``model`` (eval mode), ``device``, ``data`` (the checkpoint's data dict).
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
        from badblock.models import UNet
        from badblock.train.checkpoint import load_checkpoint

        state = load_checkpoint(path, map_location="cpu")
        try:
            model = UNet(**state["model_config"])
            model.load_state_dict(state["model"])
        except (TypeError, RuntimeError) as exc:
            raise BadInputError(path, f"checkpoint does not fit the UNet ({exc})") from None
        return cls(model, state["data"], torch.device(device), amp=amp)

    @torch.no_grad()
    def __call__(self, stacks, masks=None):
        """Damaged counts ``[N, 2k+1, Vp, B]`` (+ masks alike) -> repaired counts ``[N, Vp, B]``.

        numpy in, numpy float32 out; tensors in, a float32 tensor on the predictor's device out.
        The caller crops the view padding (``badblock.data.stack.view_padding``).
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


__all__ = ["Predictor", "normalise_scale", "network_input", "NORMALISE_MODES"]
