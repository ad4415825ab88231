"""Score a network's repairs and the classical baselines against the truth.

For each complete scan (simulated: its noiseless truth is picked up from the `<stem>.truth.<ext>`
sibling) a damaged version is scored: given with --damaged, or made here by thinning the complete
scan with the mask. Baselines: none, divide, interp (view interpolation, e7 GapFill style),
biharmonic, normconv (normalised convolution, widths tuned on the --tune scans). Repairs come
from --repaired files or are made here with --checkpoint. Writes metrics.json, report.png and the
resolved config to the output folder and prints a table.

Before any work, every scan's shape is checked against the mask, and the mask against the counts
of --damaged scans (--no-mask-check skips that; metrics.json says so). NaN or inf in any scan, a
truth file too, is refused. The output folder is built under a temporary name and appears whole;
one that already holds files is replaced only with --force. Example:

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
    parser.add_argument("--no-mask-check", action="store_true",
                        help="use the mask on --damaged scans even where it contradicts their "
                             "counts (recorded in metrics.json)")
    parser.add_argument("--force", action="store_true",
                        help="replace an output folder that already holds files")


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
    if args.no_mask_check:
        extra.append("scanner.mask_check=false")
    return extra


def _check_output(out: Path, force: bool, inputs: list) -> None:
    """Refuse, before any work, an output folder that already holds files (an earlier
    evaluation: replaced only with --force) or that holds one of the inputs (--force would
    remove it with the folder)."""
    if not out.is_dir():
        return
    root = out.resolve()
    for path in inputs:
        if path is not None and root in Path(path).resolve().parents:
            raise BadInputError(out, f"holds the input {path}: choose an output folder of its "
                                     "own")
    if not force and any(p.name != "lost+found" for p in out.iterdir()):
        raise BadInputError(out, "already holds files (an earlier evaluation?): --force "
                                 "replaces them")


def run(args: argparse.Namespace) -> int:
    from badblock.baselines import fill_options, fill_settings_of
    from badblock.config import save_resolved, to_dict
    from badblock.evaluate import (
        MADE_FROM_MASK,
        METRICS_NAME,
        REPORT_NAME,
        check_shapes,
        evaluate_files,
        format_table,
        write_damaged,
    )
    from badblock.physics.mask import resolve_mask
    from badblock.utils.atomic import atomic_dir

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
    tune = [cfg.data_path(p) for p in args.tune] if ev.tune_widths else []
    checkpoint = cfg.data_path(cfg.repair.checkpoint) if cfg.repair.checkpoint else None
    for label, paths in (("complete", complete), ("damaged", damaged or []),
                         ("repaired", repaired or []), ("tune", tune)):
        check_shapes(paths, mask, label, what)  # a mask of another scanner: before any work
    _check_output(out, args.force, [*complete, *(damaged or []), *(repaired or []), *tune,
                                    checkpoint, resolved.path])
    checks = [{"checked": False, "why": MADE_FROM_MASK}] * len(complete)
    if damaged is not None:
        checks = _mask_checks(damaged, resolved, cfg.scanner.mask_check)
    predictor = None
    if checkpoint is not None:
        from badblock.inference import load_predictor

        predictor = load_predictor(checkpoint, cfg.run.device, cfg.run.threads)
    # Everything is built under a temporary name and put in place whole, so that a failure
    # (a broken checkpoint, NaN in a truth file) leaves no damaged or repaired scans behind.
    with atomic_dir(out, replace=True, last=[METRICS_NAME]) as tmp:
        staged = tmp.resolve()

        def shown(path: Path) -> str:  # the name a staged file will have
            real = Path(path).resolve()
            return str(out / real.relative_to(staged)) if staged in real.parents else str(path)

        if predictor is not None:
            from badblock.repair import repair_files

            made = damaged or write_damaged(complete, mask, tmp / "damaged", seed=ev.seed)
            if damaged is None:
                print(f"damaged scans (thinned by the mask, seed {ev.seed}) in {out / 'damaged'}")
            summaries = repair_files(made, mask, predictor, tmp / "repaired",
                                     batch_size=cfg.repair.batch_size, force=True,
                                     mask_check=False, log=print,
                                     unchecked_why="evaluate's own (metrics.json mask_check)",
                                     declared=resolved, self_check=cfg.repair.self_check)
            damaged, repaired = made, [Path(s["output"]) for s in summaries]
        result = evaluate_files(
            complete, mask, tmp, damaged=damaged,
            repaired={ev.label: repaired} if repaired else None, tune=tune, seed=ev.seed,
            baselines=ev.baselines, widths=ev.widths or None, fbp=ev.fbp,
            scanner=args.scanner or cfg.scanner.name, use_sensitivity=ev.sensitivity,
            extra={"mask": what, "mask_check": checks, "config": to_dict(cfg)}, shown=shown,
            log=print, model_options=fill_options(fill_settings_of(cfg.fills)))
        save_resolved(cfg, tmp)
    print(format_table(result))
    print(f"wrote {out / METRICS_NAME}, {out / REPORT_NAME}")
    return 0


def _mask_checks(damaged: list[Path], resolved, check: bool) -> list[dict]:
    """The mask against each given damaged scan's counts (:func:`badblock.repair.mask_report`),
    or why not (--no-mask-check)."""
    from badblock.io import read_scan
    from badblock.repair import mask_report

    if not check:
        return [{"checked": False, "why": "switched off (--no-mask-check)"}] * len(damaged)
    return [mask_report(read_scan(p), resolved.mask, resolved) for p in damaged]
