"""Make a synthetic dataset: random phantoms (or your own activity volume) projected along a
scanner preset's own LORs into TOF sinograms, attenuated, with Poisson noise.

Writes DIR/scan_000.hs (+ .s, prompts), DIR/scan_000.truth.hs (float32 noiseless expectation),
..., DIR/simulation.json (seed, counts, phantom parameters per scan) and the resolved config.
Same seed -> identical files.
"""

from __future__ import annotations

import argparse

from badblock.commands.common import add_config_arguments, config_from_args

HELP = "simulate TOF sinograms (clean scans + noiseless truth) from phantoms"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--scanner", metavar="NAME", help="scanner preset: mini, vision, mct, mmr "
                                                          "(scanner.name)")
    parser.add_argument("--scans", type=int, metavar="N", help="number of scans (simulate.scans)")
    parser.add_argument("--counts", type=float, metavar="C",
                        help="expected prompts per scan (simulate.counts)")
    parser.add_argument("--seed", type=int, help="random seed (simulate.seed)")
    parser.add_argument("--activity", metavar="FILE.npy",
                        help="your own activity volume [z, y, x] instead of random phantoms, at "
                             "the scanner's voxel size, centred")
    parser.add_argument("--dead-blocks", metavar="T:A,...",
                        help="also write damaged/ copies with the LORs through these blocks "
                             "removed (simulate.dead_blocks)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing non-empty output folder")


def run(args: argparse.Namespace) -> int:
    from badblock.physics.simulate import simulate

    extra = []
    if args.scanner:
        extra.append(f"scanner.name={args.scanner}")
    if args.scans is not None:
        extra.append(f"simulate.scans={args.scans}")
    if args.counts is not None:
        extra.append(f"simulate.counts={args.counts!r}")
    if args.seed is not None:
        extra.append(f"simulate.seed={args.seed}")
    if args.activity:
        extra += ["simulate.phantom=file", f"simulate.activity={args.activity}"]
    if args.dead_blocks:
        quoted = ", ".join(repr(b.strip()) for b in args.dead_blocks.split(","))
        extra.append(f"simulate.dead_blocks=[{quoted}]")
    cfg = config_from_args(args, *extra)
    out = simulate(cfg, args.output or cfg.output_path("simulate"), force=args.force)
    sim = cfg.simulate
    print(f"simulated {sim.scans} {cfg.scanner.name} scan(s), {sim.counts:g} expected counts "
          f"each, seed {sim.seed} -> {out}")
    return 0
