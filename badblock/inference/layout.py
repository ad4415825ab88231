"""The network's input: which channels, in which order, normalised how. One definition for
training (the trainer builds its batches with it) and inference (the predictor does the same).

A sample is a context stack of ``2k+1`` neighbouring planes ``[2k+1, Vp, B]`` (damaged counts,
the centre plane ``k`` the one to repair) with its mask stack ``[2k+1, Vp, B]`` (fraction of
real LORs lost per bin, 0..1). The network sees, for each sample, the channels

    counts / scale  (2k+1 planes)  [+ f of the centre plane | + f of all 2k+1 planes]

``scale`` comes from the damaged input only (:func:`normalise_scale`), so that repair, which
has nothing else, normalises exactly as training did; the network's output times ``scale`` is
counts again. The mask channel is there with ``mask_channel``; ``mask_stack`` gives all
``2k+1`` mask planes instead of the centre one. :class:`ChannelLayout` counts these channels:
the UNet is built with ``in_channels = layout.in_channels`` (its own extra channels, the
sensitivity map and the prior, it adds inside).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from badblock.errors import BadInputError

EPS = 1e-8
NORMALISE_MODES = ("max", "mean", "none")


@dataclass(frozen=True)
class ChannelLayout:
    """Input channels of the network: ``count_planes`` (2k+1) then ``mask_planes`` (0, 1 or
    2k+1). Build it with :meth:`of`."""

    count_planes: int
    mask_planes: int

    @property
    def in_channels(self) -> int:
        return self.count_planes + self.mask_planes

    @classmethod
    def of(cls, context: int, mask_channel: bool, mask_stack: bool = False) -> ChannelLayout:
        """The layout for context ``k`` and the data section's mask flags.

        Raises :class:`BadInputError` (key ``data.mask_stack``) for ``mask_stack`` without
        ``mask_channel``.
        """
        planes = 2 * int(context) + 1
        if mask_stack and not mask_channel:
            raise BadInputError("data.mask_stack", "needs data.mask_channel")
        mask_planes = (planes if mask_stack else 1) if mask_channel else 0
        return cls(planes, mask_planes)


def normalise_scale(inp: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-sample scale ``[N, 1, 1, 1]`` of a damaged input stack ``[N, C, V, B]`` (counts).

    ``max``: stack maximum + 1e-8; ``mean``: stack mean + 1e-8; ``none``: 1.
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
    """The network input ``[N, 2k+1 (+1 | +2k+1), V, B]`` (see the module docstring).

    ``inp``: damaged counts ``[N, 2k+1, V, B]``; ``mask``: lost fractions ``[N, 2k+1, V, B]``
    (needed with ``mask_channel``); ``scale``: ``[N, 1, 1, 1]`` from :func:`normalise_scale`.
    Returns ``inp / scale``, then the centre plane's ``f`` (``mask_channel``) or all ``2k+1``
    planes' (and ``mask_stack``).
    """
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


__all__ = ["ChannelLayout", "normalise_scale", "network_input", "NORMALISE_MODES", "EPS"]
