"""Make the damage draws and model-based fills a fill-prior network trains on.

For model.fill_prior the network takes the model-based fill (TOF OSEM with the gaps modelled,
projected: the `model` baseline) as an input and corrects it. A fill needs a whole damaged scan
and one OSEM, so it is made here, before training, for fills.draws damage draws per training
scan (1-3 dead blocks each, as training draws them) and one per validation scan (the
scanner.dead_blocks mask), and written to data.fills, where `badblock train` reads them.
Attenuation is modelled when every scan has its <id>.mu.npy beside its source file (badblock
simulate writes them); repair then needs the scan's map too (--mu).

example:
  badblock fills -o runs/demo --config demo
"""

from __future__ import annotations

import argparse

from badblock.commands.common import add_config_arguments, config_from_args

HELP = "damage draws + model-based fills for a fill-prior network (model.fill_prior)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--draws", type=int, metavar="N",
                        help="damage draws per training scan (default fills.draws)")
    parser.add_argument("--force", action="store_true", help="make existing fills again")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import time

    from badblock.data.fills import make_fills_for
    from badblock.utils.progress import progress

    cfg = config_from_args(args, *([f"fills.draws={args.draws}"] if args.draws else []))
    t0 = time.perf_counter()
    with progress(total=None, desc="fills", unit="fill") as bar:
        folder = make_fills_for(cfg, force=args.force, progress=lambda _msg: bar.update(1))
    print(f"{folder}: fills made in {time.perf_counter() - t0:.1f} s")
    return 0
