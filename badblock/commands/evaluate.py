"""Score a network's repairs and the classical baselines against the truth.

For each complete scan (simulated: its noiseless truth is picked up from the `<stem>.truth.<ext>`
sibling) a damaged version is scored: given with --damaged, or made here by thinning the complete
scan with the mask. Baselines: none, divide, interp (view interpolation, e7 GapFill style),
biharmonic, normconv (normalised convolution, widths tuned on the --tune scans). Repairs come
from --repaired files or are made here with --checkpoint. Writes metrics.json, report.png and the
resolved config to the output folder and prints a table. Example:

    badblock evaluate sim/scan_004.hs sim/scan_005.hs --scanner mini --dead-blocks 5:1 \\
        --checkpoint run/train/checkpoint_best.pt --tune sim/scan_003.hs -o run/evaluate
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from badblock.commands.common import add_config_arguments, config_from_args
from badblock.errors import BadInputError

HELP = "score repairs and classical baselines against the truth (metrics.json, table, figure)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("complete", nargs="+", metavar="SCAN",
                        help="complete scans (header or flat data file); a <stem>.truth.<ext> "
                             "sibling is used as the noiseless truth")
    parser.add_argument("--mask", metavar="FILE.npy", help="dead-block mask (default: from "
                        "--scanner/--dead-blocks, else the scanner config section)")
    parser.add_argument("--scanner", metavar="NAME", help="scanner preset for the mask")
    parser.add_argument("--dead-blocks", metavar="T:A[,T:A...]", help="dead blocks for the mask")
    parser.add_argument("--damaged", nargs="+", metavar="SCAN",
                        help="damaged versions of the complete scans, same order (default: "
                             "thin the complete scans by the mask, seed evaluate.seed)")
    parser.add_argument("--repaired", nargs="+", metavar="SCAN",
                        help="repairs of the damaged scans, same order")
    parser.add_argument("--label", metavar="NAME", help="method name of the repairs "
                        "(default evaluate.label = unet)")
    parser.add_argument("--checkpoint", metavar="FILE",
                        help="repair the damaged scans with this checkpoint (into OUT/repaired)")
    parser.add_argument("--tune", nargs="+", default=[], metavar="SCAN",
                        help="complete validation scans to tune the normconv widths on")
    parser.add_argument("--widths", metavar="P,V,B", help="fixed normconv sigmas in planes, "
                        "views, bins (no tuning)")
    parser.add_argument("--baselines", metavar="A,B,...", help="baselines to run (default all: "
                        "none,divide,interp,biharmonic,normconv)")
    parser.add_argument("--no-fbp", action="store_true", help="skip image-domain scores")


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = []
    if args.widths:
        extra.append("evaluate.widths=" + json.dumps([float(w) for w in args.widths.split(",")]))
    if args.baselines:
        extra.append("evaluate.baselines=" + json.dumps(args.baselines.split(",")))
    if args.no_fbp:
        extra.append("evaluate.fbp=false")
    if args.label:
        extra.append("evaluate.label=" + json.dumps(args.label))
    if args.checkpoint:
        extra.append("repair.checkpoint=" + json.dumps(args.checkpoint))
    return extra


def run(args: argparse.Namespace) -> int:
    from badblock.config import save_resolved, to_dict
    from badblock.evaluate import evaluate_files, format_table, write_damaged
    from badblock.physics.mask import resolve_mask

    cfg = config_from_args(args, *_overrides(args))
    out = Path(args.output) if args.output else cfg.output_path(cfg.evaluate.output)
    ev = cfg.evaluate
    if ev.widths and len(ev.widths) != 3:
        raise BadInputError("evaluate.widths", f"need three sigmas (planes, views, bins), got "
                                               f"{ev.widths}")
    complete = [cfg.data_path(p) for p in args.complete]
    resolved = resolve_mask(cfg.scanner, mask_path=args.mask, scanner=args.scanner,
                            dead_blocks=args.dead_blocks, data_root=cfg.run.data)
    mask, what = resolved.mask, resolved.describe()
    print(f"mask: {what}")
    damaged = [cfg.data_path(p) for p in args.damaged] if args.damaged else None
    repaired = [cfg.data_path(p) for p in args.repaired] if args.repaired else None
    if repaired is not None and cfg.repair.checkpoint:
        raise BadInputError("--checkpoint", "give either --repaired scans or a --checkpoint "
                                            "to make them, not both")
    if cfg.repair.checkpoint:
        from badblock.inference import load_predictor
        from badblock.repair import repair_files

        if damaged is None:
            damaged = write_damaged(complete, mask, out / "damaged", seed=ev.seed)
            print(f"damaged scans (thinned by the mask, seed {ev.seed}) in {out / 'damaged'}")
        predictor = load_predictor(cfg.data_path(cfg.repair.checkpoint), cfg.run.device,
                                   cfg.run.threads)
        summaries = repair_files(damaged, mask, predictor, out / "repaired",
                                 batch_size=cfg.repair.batch_size, force=True, log=print)
        repaired = [Path(s["output"]) for s in summaries]
    tune = [cfg.data_path(p) for p in args.tune] if ev.tune_widths else []
    result = evaluate_files(
        complete, mask, out, damaged=damaged,
        repaired={ev.label: repaired} if repaired else None, tune=tune, seed=ev.seed,
        baselines=ev.baselines, widths=ev.widths or None, fbp=ev.fbp,
        scanner=args.scanner or cfg.scanner.name, use_sensitivity=ev.sensitivity,
        extra={"mask": what, "config": to_dict(cfg)}, log=print)
    save_resolved(cfg, out)
    print(format_table(result))
    print(f"wrote {out / 'metrics.json'}, {out / 'report.png'}")
    return 0
