"""Train the UNet on a training store.

Writes into run.output/train.run: checkpoint_latest.pt, checkpoint_best.pt,
checkpoint_final.pt, train_loss.txt, test_loss.txt, recon_loss.txt, log.jsonl, progress.png,
tensorboard/ and config.resolved.yaml. Starting again in the same folder continues the run.
SIGUSR2 / SIGTERM save and exit 0 (and requeue under Slurm). Multi-process: start with
torchrun or srun; each process finds its rank in the environment.

examples:
  badblock train --config demo
  badblock train -c my.yaml --set train.epochs=50 --set data.batch_size=32
  torchrun --nproc_per_node 8 -m badblock train -c vision.yaml
"""

from __future__ import annotations

import sys

from badblock.commands.common import add_config_arguments, config_from_args

HELP = "train the UNet on a training store"


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--epochs", type=int, metavar="N", help="shortcut for train.epochs")
    parser.add_argument("--device", metavar="DEV", help="shortcut for run.device (cpu, cuda, ...)")


def run(args) -> int:
    extra = []
    if args.epochs is not None:
        extra.append(f"train.epochs={args.epochs}")
    if args.device:
        extra.append(f"run.device={args.device}")
    cfg = config_from_args(args, *extra)

    from badblock.train.loop import TrainingError, train

    try:
        train(cfg)
    except TrainingError as exc:
        print(f"badblock train: error: {exc}", file=sys.stderr)
        return 1
    return 0
