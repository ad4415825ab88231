"""The mask stage: compute a scanner's dead-block mask (or import one) and write it with its
picture and summary.

Outputs, for ``MASK.npy``: the mask itself (float32 ``[plane, view, bin]``, fraction of real
LORs lost per bin), ``MASK.png`` (the most affected planes), ``MASK.json`` (scanner, shape,
dead blocks and crystals, source and :func:`badblock.physics.mask.mask_summary`'s numbers) and
the resolved config beside them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from badblock.config import Config, save_resolved
from badblock.errors import BadInputError


def make_mask(cfg: Config, out: str | os.PathLike, *, force: bool = False,
              allow_pickle: bool = False) -> dict:
    """Resolve the mask of ``cfg.scanner`` (``mask`` file if set, else its dead blocks and
    crystals on the ``name`` preset) and write ``out`` (must end in ``.npy``) with its
    ``.png`` and ``.json`` siblings and the resolved config. An existing ``out`` is kept
    unless ``force``; ``allow_pickle`` lets a legacy pickled mask file be imported.

    Returns the JSON summary (keys ``scanner``, ``shape``, ``dead_blocks``, ``dead_crystals``,
    ``source`` and the :func:`~badblock.physics.mask.mask_summary` numbers).
    """
    from badblock.physics.mask import mask_summary, resolve_mask
    from badblock.physics.scanners import get_scanner
    from badblock.report import draw_mask
    from badblock.utils.atomic import atomic_path, atomic_write_json

    scanner = get_scanner(cfg.scanner.name)
    out = Path(out)
    if out.suffix != ".npy":
        raise BadInputError(out, "the mask is written as .npy: give a name ending in .npy")
    if out.exists() and not force:
        raise BadInputError(out, "already exists (use --force to overwrite)")
    resolved = resolve_mask(cfg.scanner, data_root=cfg.run.data, check_shape=True,
                            allow_pickle=allow_pickle)
    mask = resolved.mask
    what = (f"imported from {resolved.path}" if resolved.path is not None
            else resolved.describe(with_scanner=False))
    summary = mask_summary(mask)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, mask, allow_pickle=False)  # streamed: no second in-memory copy of the mask
    draw_mask(out.with_suffix(".png"), mask, summary["worst_planes"], f"{scanner.name}: {what}")
    info = {"scanner": scanner.name, "shape": list(mask.shape), "dead_blocks": resolved.blocks,
            "dead_crystals": resolved.crystals, "source": what, **summary}
    atomic_write_json(out.with_suffix(".json"), info)
    save_resolved(cfg, out.parent)
    return info


def format_summary(info: dict, out: str | os.PathLike) -> str:
    """The lines ``badblock mask`` prints for :func:`make_mask`'s summary ``info``."""
    return "\n".join([
        f"{info['scanner']} mask [plane, view, bin] = {info['shape']}, {info['source']}",
        f"  bins affected:            {info['percent_bins_affected']:.2f} % "
        f"({info['bins_affected']} of {info['bins']})",
        f"  planes touched:           {info['planes_touched']} of {info['planes']}",
        f"  affected bins fully dead: {info['percent_affected_fully_dead']:.1f} %",
        f"  median loss (affected):   {100 * info['median_loss_affected']:.1f} %",
        f"wrote {out} (+ .png, .json)"])


__all__ = ["make_mask", "format_summary"]
