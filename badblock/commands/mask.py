"""Compute the dead-block mask of a scanner (fraction of real LORs lost per bin), or import one.

Writes MASK.npy (float32 [plane, view, bin]), MASK.png (the most affected planes), MASK.json
(the summary) and the resolved config next to them, then prints how much of the sinogram the
dead blocks touch. Example:

    badblock mask --scanner vision --dead-blocks 3:1 -o vision-mask.npy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from badblock.commands.common import add_config_arguments, config_from_args

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


def run(args: argparse.Namespace) -> int:
    from badblock.masks import format_summary, make_mask

    cfg = config_from_args(args, *_overrides(args))
    out = Path(args.output) if args.output else cfg.output_path("mask.npy")
    info = make_mask(cfg, out, force=args.force, allow_pickle=args.allow_pickle)
    print(format_summary(info, out))
    return 0
