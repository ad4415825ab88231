"""Compute the dead-block mask of a scanner (fraction of real LORs lost per bin), or import one.

Writes MASK.npy (float32 [plane, view, bin]), MASK.png (the most affected planes), MASK.json
(the summary) and the resolved config next to them, then prints how much of the sinogram the
dead blocks touch. Example:

    badblock mask --scanner vision --dead-blocks 3:1 -o vision-mask.npy
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from badblock.commands.common import add_config_arguments, config_from_args
from badblock.errors import BadInputError

HELP = "compute (or import) the dead-block mask: fraction of LORs lost per bin"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, output=False)
    parser.add_argument("--scanner", metavar="NAME", help="scanner preset: mini, vision, mct, mmr "
                        "(default scanner.name)")
    parser.add_argument("--dead-blocks", metavar="T:A[,T:A...]",
                        help="dead blocks as transaxial:axial block index (default "
                             "scanner.dead_blocks)")
    parser.add_argument("--dead-crystals", metavar="c:r[,c:r...]",
                        help="single dead crystals as crystal:ring (default scanner.dead_crystals)")
    parser.add_argument("--import", dest="import_mask", metavar="FILE",
                        help="import this mask (.npy) instead of computing one (default "
                             "scanner.mask); it is checked against the scanner's shape")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="let --import read a legacy pickled mask (runs code from the file: "
                             "only for files you trust)")
    parser.add_argument("--output", "-o", metavar="FILE",
                        help="mask file to write (default: run.output/mask.npy)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing mask file")


def _overrides(args: argparse.Namespace) -> list[str]:
    # JSON lists keep "3:1" a string: bare YAML would read 3:1 as the base-60 number 181.
    extra = []
    if args.scanner:
        extra.append(f"scanner.name={args.scanner}")
    if args.dead_blocks is not None:
        extra.append("scanner.dead_blocks=" + json.dumps(args.dead_blocks.split(",")))
    if args.dead_crystals is not None:
        extra.append("scanner.dead_crystals=" + json.dumps(args.dead_crystals.split(",")))
    if args.import_mask:
        extra.append("scanner.mask=" + json.dumps(args.import_mask))
    return extra


def _plot(mask, summary: dict, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    planes = summary["worst_planes"] or [0]
    fig, axes = plt.subplots(1, len(planes), figsize=(3.6 * len(planes) + 1, 3.6), squeeze=False,
                             layout="constrained")
    for ax, p in zip(axes[0], planes):
        im = ax.imshow(mask[p], vmin=0, vmax=1, cmap="magma", aspect="auto",
                       interpolation="nearest")
        ax.set_title(f"plane {p}")
        ax.set_xlabel("bin")
        ax.set_ylabel("view")
    fig.colorbar(im, ax=axes[0].tolist(), label="fraction of LORs lost")
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from badblock.config import save_resolved
    from badblock.physics.mask import (
        dead_block_mask,
        load_mask,
        mask_summary,
        parse_blocks,
        parse_crystals,
    )
    from badblock.physics.scanners import get_scanner
    from badblock.utils.atomic import atomic_path, atomic_write_bytes, atomic_write_json

    cfg = config_from_args(args, *_overrides(args))
    scanner = get_scanner(cfg.scanner.name)
    out = Path(args.output) if args.output else cfg.output_path("mask.npy")
    if out.suffix != ".npy":
        raise BadInputError(out, "the mask is written as .npy: give a name ending in .npy")
    if out.exists() and not args.force:
        raise BadInputError(out, "already exists (use --force to overwrite)")

    if cfg.scanner.mask:
        source = cfg.data_path(cfg.scanner.mask)
        mask = load_mask(source, scanner, allow_pickle=args.allow_pickle)
        what = f"imported from {source}"
        blocks, crystals = [], []
    else:
        blocks = parse_blocks(cfg.scanner.dead_blocks, "scanner.dead_blocks")
        crystals = parse_crystals(cfg.scanner.dead_crystals, "scanner.dead_crystals")
        if not blocks and not crystals:
            raise BadInputError("scanner.dead_blocks", "no dead blocks or crystals given")
        mask = dead_block_mask(scanner, blocks, crystals)
        what = "dead blocks " + ",".join(f"{t}:{a}" for t, a in blocks)
        if crystals:
            what += " crystals " + ",".join(f"{c}:{r}" for c, r in crystals)

    summary = mask_summary(mask)
    png = _plot(mask, summary, f"{scanner.name}: {what}")
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, mask, allow_pickle=False)  # streamed: no second in-memory copy of the mask
    atomic_write_bytes(out.with_suffix(".png"), png)
    atomic_write_json(out.with_suffix(".json"), {
        "scanner": scanner.name, "shape": list(mask.shape), "dead_blocks": blocks,
        "dead_crystals": crystals, "source": what, **summary})
    save_resolved(cfg, out.parent)

    print(f"{scanner.name} mask [plane, view, bin] = {list(mask.shape)}, {what}")
    print(f"  bins affected:            {summary['percent_bins_affected']:.2f} % "
          f"({summary['bins_affected']} of {summary['bins']})")
    print(f"  planes touched:           {summary['planes_touched']} of {summary['planes']}")
    print(f"  affected bins fully dead: {summary['percent_affected_fully_dead']:.1f} %")
    print(f"  median loss (affected):   {100 * summary['median_loss_affected']:.1f} %")
    print(f"wrote {out} (+ .png, .json)")
    return 0
