"""Build a training store from raw scans: one streaming pass per file, bounded memory.

INPUT may be files, globs ('scans/*.hs') or folders (every scan header in them). Headerless
raw files need their layout: --set preprocess.shape=[33,815,50,520] (dtype uint16 and
little-endian by default). A sibling X.truth.hs of X.hs is stored as the scan's truth.

With --kind paired the inputs are damaged scans, and a --mask is checked against their counts
first (bins it calls fully dead hold none, no undeclared dead block; --no-mask-check keeps it
anyway, recorded in the manifest).

The store is written to OUTPUT/<preprocess.store> (default OUTPUT/store). Running again on
the same inputs and settings does nothing; a store built from other inputs is replaced only
with --force, and only once the new one is complete.

examples:
  badblock preprocess sim/ -o runs/demo
  badblock preprocess 'raw/*.s' -o runs/vision --config vision \\
      --set preprocess.shape=[33,815,50,520]
  badblock preprocess low/*.npy --kind paired --targets full/*.npy -o runs/denoise
"""

from __future__ import annotations

import argparse

from badblock.commands.common import add_config_arguments, config_from_args

HELP = "raw scans -> training store (manifest, memory-mapped shards, split, statistics)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="scan files, globs or folders (default: preprocess.inputs)")
    parser.add_argument("--kind", choices=["sinogram", "image", "paired"],
                        help="sinogram scans [TOF, plane, view, bin] (default), image volumes "
                             "[slice, H, W], or paired input/target scans")
    parser.add_argument("--targets", nargs="+", metavar="TARGET",
                        help="--kind paired: the target scans, one per input, same order")
    parser.add_argument("--mask", metavar="NPY",
                        help="dead-block mask [plane, view, bin] to keep in the store "
                             "(same as --set scanner.mask=NPY)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--reference", action="store_true",
                       help="reference the read-only raw files in place (the default; same as "
                            "--set preprocess.copy=false); a changed raw file is refused later")
    where.add_argument("--copy", action="store_true",
                       help="copy the counts into the store (--set preprocess.copy=true), so "
                            "the store outlives moved or changed raw files")
    parser.add_argument("--no-mask-check", action="store_true",
                        help="--kind paired: keep the mask even where it contradicts the "
                             "damaged inputs' counts (recorded in the manifest)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing store built from other inputs or settings")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from badblock.data.preprocess import preprocess
    from badblock.utils.memory import peak_rss_mb

    extra = []
    if args.kind:
        extra.append(f"preprocess.kind={args.kind}")
    if args.reference:
        extra.append("preprocess.copy=false")
    if args.copy:
        extra.append("preprocess.copy=true")
    if args.no_mask_check:
        extra.append("scanner.mask_check=false")
    cfg = config_from_args(args, *extra)
    # Paths go in directly, not through --set, so no YAML parsing can mangle them.
    if args.inputs:
        cfg.preprocess.inputs = list(args.inputs)
    if args.targets:
        cfg.preprocess.targets = list(args.targets)
    if args.mask:
        cfg.scanner.mask = args.mask
    result = preprocess(cfg, force=args.force)
    if result.status == "up-to-date":
        print(f"{result.store}: up to date (same inputs, checksums and settings); nothing to do")
        return 0
    mb = result.bytes_read / 2**20
    rate = mb / result.seconds if result.seconds > 0 else 0.0
    print(f"{result.store}: {result.status}: {result.n_scans} scan(s), {result.n_planes} planes "
          f"({result.n_empty} empty), train {len(result.train)} / val {len(result.val)} "
          f"[{', '.join(result.val) or '-'}]")
    print(f"read {mb:.1f} MiB in {result.seconds:.2f} s ({rate:.0f} MiB/s), "
          f"peak RSS {peak_rss_mb():.0f} MiB")
    if result.mask_check:
        done = sum(c["checked"] for c in result.mask_check)
        print(f"mask checked against the counts of {done} of {len(result.mask_check)} damaged "
              "inputs" + ("" if done else f" ({result.mask_check[0]['why']})"))
    return 0
