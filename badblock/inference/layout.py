"""The network's input: which channels, in which order, normalised how. One definition for
training (the trainer builds its batches with it) and inference (the predictor does the same).

A sample is a context stack of ``C = 2k+1`` neighbouring planes (damaged counts ``y_j``, the
centre plane ``k`` the one to repair) with its mask stack (fraction ``f_j`` of real LORs lost per
bin, 0..1) and, for the per-LOR layout, its sensitivity stack (``s_j``: real LORs per bin,
:func:`badblock.physics.mask.real_lor_count`), all ``[C, Vw, B]``. ``Vw = Vp + 2 margin``: the
padded views the network sees (``Vp``, a multiple of ``2**depth``) plus ``margin`` views each
side that only the prior's kernel reads (:func:`badblock.physics.normconv.view_margin`). The
network sees, cropped to the ``Vp`` views,

    u_j / scale  (C planes)  [+ f of the centre | + f of all C planes]  [+ s_c / max s_c]
                 [+ ln scale]  [+ prior / scale]  [+ fill / (s_c scale)]

with ``u_j = y_j / s_j`` (counts per real LOR, 0 in gap bins) for ``per_lor``, else ``u_j = y_j``;
the sensitivity pattern of the centre plane (``per_lor``); the count level (``count_channel``:
a constant plane of ``ln scale``, what the normalisation takes away -- with ``mean``, the mean
counts per LOR of the stack -- so that the network can tell 0.25x from 10x the dose, whose
Poisson noise it should smooth differently); and the normalised-convolution prior
of the centre plane per LOR (``prior_widths``: :func:`badblock.physics.normconv.normconv_stack`,
the very function of the ``normconv`` baseline); and the model-based fill of the centre plane
per LOR (``fill_prior``: :func:`badblock.baselines.model_fill` of the whole damaged scan, made
outside the network and handed in as counts, ``[N, 1, Vw, B]``). ``scale`` comes from the
damaged input only (:func:`normalise_scale` of ``u``), so that repair, which has nothing else,
normalises exactly as training did. The network's output ``o`` (per LOR with ``per_lor``,
divided by ``scale``) maps back to counts as ``o * out_scale`` with ``out_scale = scale * s_c``
(``scale`` without ``per_lor``): :meth:`ChannelLayout.inputs` returns both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from badblock.errors import BadInputError

EPS = 1e-8
NORMALISE_MODES = ("max", "mean", "none")


def normalise_scale(inp: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-sample scale ``[N, 1, 1, 1]`` of a damaged input stack ``[N, C, V, B]``.

    ``max``: stack maximum + 1e-8; ``mean``: stack mean + 1e-8; ``none``: 1.
    Network input = stack / scale; network output * scale = the stack's units again.
    """
    n = inp.shape[0]
    if mode == "max":
        return inp.reshape(n, -1).amax(dim=1).view(n, 1, 1, 1) + EPS
    if mode == "mean":
        return inp.reshape(n, -1).mean(dim=1).view(n, 1, 1, 1) + EPS
    if mode == "none":
        return torch.ones((n, 1, 1, 1), dtype=inp.dtype, device=inp.device)
    raise BadInputError("data.normalise", f"must be one of {NORMALISE_MODES}, not {mode!r}")


@dataclass(frozen=True)
class ChannelLayout:
    """The network's input channels and how its output becomes counts (module docstring).

    ``context`` (k), ``mask_channel`` / ``mask_stack`` (the centre plane's f, or all C planes'),
    ``normalise`` (:data:`NORMALISE_MODES`), ``per_lor`` (counts per real LOR plus the centre's
    sensitivity pattern; needs sensitivity stacks), ``prior_widths`` (sigmas planes, views,
    bins of the prior channel; empty = none; needs ``per_lor`` and ``mask_stack``),
    ``fill_prior`` (the model-based fill channel, the last; needs ``per_lor``),
    ``count_channel`` (``ln scale`` as a constant plane, before the prior channels), ``margin``
    (extra views each side of the network's; 0 without a normconv prior). Checkpoints store
    :meth:`to_dict`; :meth:`from_dict` reads it back (older checkpoints: the plain layout).
    """

    context: int = 2
    mask_channel: bool = False
    mask_stack: bool = False
    normalise: str = "max"
    per_lor: bool = False
    prior_widths: tuple[float, ...] = field(default_factory=tuple)
    margin: int = 0
    fill_prior: bool = False
    count_channel: bool = False

    def __post_init__(self):
        if self.context < 0:
            raise BadInputError("data.context", f"must be >= 0, got {self.context}")
        if self.mask_stack and not self.mask_channel:
            raise BadInputError("data.mask_stack", "needs data.mask_channel")
        if self.normalise not in NORMALISE_MODES:
            raise BadInputError("data.normalise", f"must be one of {NORMALISE_MODES}, not "
                                                  f"{self.normalise!r}")
        if self.prior_widths:
            from badblock.physics.normconv import check_widths, view_margin

            object.__setattr__(self, "prior_widths",
                               check_widths(self.prior_widths, "model.prior_widths"))
            if not (self.per_lor and self.mask_stack):
                raise BadInputError("model.prior_widths", "the prior channel needs model.per_lor "
                                    "and data.mask_stack (the sensitivity and f of every plane)")
            if self.margin < view_margin(self.prior_widths):
                raise BadInputError("model.prior_widths", f"needs a view margin of "
                                    f"{view_margin(self.prior_widths)}, got {self.margin}")
        if self.fill_prior and not self.per_lor:
            raise BadInputError("model.fill_prior", "the fill channel needs model.per_lor")
        if self.count_channel and self.normalise == "none":
            raise BadInputError("model.count_channel", "needs data.normalise max or mean (with "
                                "none the counts themselves are the input: nothing is taken "
                                "away to give back)")

    @classmethod
    def of(cls, data_cfg, model_cfg) -> ChannelLayout:
        """The layout of a run's ``data`` and ``model`` config sections."""
        from badblock.physics.normconv import view_margin

        widths = tuple(float(v) for v in (getattr(model_cfg, "prior_widths", None) or ()))
        return cls(context=data_cfg.context, mask_channel=data_cfg.mask_channel,
                   mask_stack=data_cfg.mask_stack, normalise=data_cfg.normalise,
                   per_lor=bool(getattr(model_cfg, "per_lor", False)), prior_widths=widths,
                   margin=view_margin(widths) if widths else 0,
                   fill_prior=bool(getattr(model_cfg, "fill_prior", False)),
                   count_channel=bool(getattr(model_cfg, "count_channel", False)))

    @classmethod
    def from_dict(cls, data: dict) -> ChannelLayout:
        """The layout a checkpoint's ``data`` dict describes."""
        return cls(context=int(data["context"]), mask_channel=bool(data.get("mask_channel")),
                   mask_stack=bool(data.get("mask_stack")),
                   normalise=str(data.get("normalise", "max")),
                   per_lor=bool(data.get("per_lor", False)),
                   prior_widths=tuple(data.get("prior_widths") or ()),
                   margin=int(data.get("margin", 0)),
                   fill_prior=bool(data.get("fill_prior", False)),
                   count_channel=bool(data.get("count_channel", False)))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["prior_widths"] = list(self.prior_widths)
        return out

    @property
    def planes(self) -> int:
        return 2 * self.context + 1

    @property
    def mask_planes(self) -> int:
        return (self.planes if self.mask_stack else 1) if self.mask_channel else 0

    @property
    def in_channels(self) -> int:
        return (self.planes + self.mask_planes + int(self.per_lor) + int(self.count_channel)
                + int(bool(self.prior_widths)) + int(self.fill_prior))

    @property
    def prior_channel(self) -> int | None:
        """Index of the estimate a residual network corrects (the last channel): the fill
        channel if there is one, else the normconv prior channel, else None."""
        return self.in_channels - 1 if (self.prior_widths or self.fill_prior) else None

    def inputs(self, inp: torch.Tensor, mask: torch.Tensor | None = None,
               sens: torch.Tensor | None = None, fill: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, scale, out_scale)``: the network input ``[N, in_channels, Vp, B]``, the
        per-sample normaliser ``[N, 1, 1, 1]`` and the factor ``[N, 1, Vp, B]`` (``[N, 1, 1, 1]``
        without ``per_lor``) that turns the network's output into counts.

        ``inp``: damaged counts ``[N, C, Vw, B]``; ``mask``: lost fractions alike (needed with
        ``mask_channel``); ``sens``: sensitivity stacks alike (needed with ``per_lor``);
        ``fill``: the model-based fill of the centre plane in counts ``[N, 1, Vw, B]`` (needed
        with ``fill_prior``); ``Vw = Vp + 2 margin``.
        """
        c, m = self.planes, self.margin
        if inp.ndim != 4 or inp.shape[1] != c or inp.shape[2] <= 2 * m:
            raise BadInputError("stacks", f"expected [N, {c}, Vp + {2 * m}, B] context stacks, "
                                          f"got {list(inp.shape)}")
        inp = inp.float()
        if self.mask_channel:
            if mask is None:
                raise BadInputError("mask", "this network was trained with the mask channel: "
                                            "give the mask of the damaged scan")
            if mask.shape != inp.shape:
                raise BadInputError("mask", f"expected mask stacks {list(inp.shape)}, got "
                                            f"{list(mask.shape)}")
        vw = inp.shape[2]
        crop = slice(m, vw - m)
        if self.per_lor:
            if sens is None or sens.shape != inp.shape:
                raise BadInputError("sensitivity", "this network works per real LOR: give "
                                    f"sensitivity stacks {list(inp.shape)}")
            s = sens.float()
            u = _per_lor(inp, s)
        else:
            u = inp
        u = u[:, :, crop]
        scale = normalise_scale(u, self.normalise)
        parts = [u / scale]
        if self.mask_channel:
            f = mask.float()[:, :, crop]
            parts.append(f if self.mask_stack else f[:, self.context:self.context + 1])
        out_scale = scale
        if self.per_lor:
            centre = s[:, self.context:self.context + 1, crop]
            peak = centre.amax(dim=(2, 3), keepdim=True)
            parts.append(centre / torch.where(peak > 0, peak, torch.ones_like(peak)))
            out_scale = scale * centre
        if self.count_channel:
            parts.append(torch.log(scale).expand(-1, 1, *u.shape[2:]))
        if self.prior_widths:
            from badblock.physics.normconv import normconv_stack

            rate = normconv_stack(inp, 1.0 - mask.float(), s, self.prior_widths, margin=m)
            parts.append(rate[:, None] / scale)
        if self.fill_prior:
            if fill is None or fill.shape != (inp.shape[0], 1) + inp.shape[2:]:
                raise BadInputError("fill", "this network takes the model-based fill of the "
                                    f"centre plane: give [N, 1, {vw}, B] counts")
            parts.append(_per_lor(fill.float()[:, :, crop], centre) / scale)
        return torch.cat(parts, dim=1), scale, out_scale


def _per_lor(counts: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Counts per real LOR: ``counts / s`` where ``s > 0``, else 0 (gap bins)."""
    return torch.where(s > 0, counts / torch.where(s > 0, s, torch.ones_like(s)),
                       torch.zeros_like(counts))


__all__ = ["ChannelLayout", "normalise_scale", "NORMALISE_MODES", "EPS"]
