"""Run the whole chain on built-in simulated data: simulate -> preprocess -> train -> repair ->
evaluate, ending in a report (report.png, metrics.json, report.md) under the output folder.

  badblock demo -o demo-output            # about 1 minute on 2 CPU cores (3 with
                                          # --also-truth)
  badblock demo -o /tmp/d --fast          # seconds: tiny data, few steps (what CI runs)
"""

from __future__ import annotations

import argparse

from badblock.commands.common import add_config_arguments, config_from_args

HELP = "the whole chain on simulated data, ending in a report"

# A fast variant for CI and smoke tests: same chain, tiny data and training.
FAST = ["demo.train_scans=3", "demo.test_scans=1", "train.epochs=2", "data.epoch_size=64",
        "data.batch_size=8", "train.val_batches=2", "evaluate.widths=[1.0, 1.0, 1.5]",
        "fills.draws=1"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--fast", action="store_true",
                        help="tiny data and a few training steps: checks the chain in a minute")
    parser.add_argument("--also-truth", action="store_true",
                        help="also train against the noiseless truth and report both networks")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty output folder, replacing earlier results")


def run(args: argparse.Namespace) -> int:
    from badblock.demo import run_demo

    if args.config is None:
        args.config = "demo"
    extra = list(FAST) if args.fast else []
    if args.also_truth:
        extra.append("demo.also_truth=true")
    # --fast settings sit under the user's own --set values, which win.
    args.overrides = extra + list(args.overrides)
    cfg = config_from_args(args)
    if not args.output and cfg.run.output == "badblock-output":
        cfg.run.output = "demo-output"
    run_demo(cfg, force=args.force)
    return 0
