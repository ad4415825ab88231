"""Repair damaged scans with a trained checkpoint; write them in their own format.

Each output keeps the input's format, shape, dtype and header keys (its header names the new
data file). Only planes the mask touches go through the network; all other planes, and the bins
with f = 0 of repaired planes, are copied unchanged. Integer outputs are rounded and clipped to
the dtype's range (the log says how many bins were clipped). With one input, -o may name the
output scan (e.g. fixed.hs); otherwise -o is a folder and outputs keep the input names. The
input is never overwritten, an existing output only with --force. A repair_summary.json and the
resolved config are written next to the outputs.

Before anything is written, each scan is checked against what repair is told: the checkpoint's
scanner must be the scan's, float scans must be finite, and the mask must fit the counts (bins it
calls fully dead hold none, the bins it thins are thinned, no undeclared dead block;
--no-mask-check skips this, and the summary says so). A network that predicts NaN or inf for a
damaged bin stops the repair (exit 2, no output). --dead-blocks auto finds each scan's dead blocks
and crystals with `badblock detect` and repairs with those. Example:

    badblock repair --checkpoint run/train/checkpoint_best.pt --scanner vision \\
        --dead-blocks 3:1 scans/frame1.s.hdr -o repaired/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from badblock.commands.common import add_config_arguments, config_from_args
from badblock.errors import BadInputError

HELP = "repair damaged scans with a checkpoint, written in the input's own format"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, output=False)
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="damaged scans (header file, or flat data file with a .json sidecar)")
    parser.add_argument("--output", "-o", metavar="OUT",
                        help="output folder, or the output scan when there is one input "
                             "(default: run.output/repair.output)")
    parser.add_argument("--checkpoint", metavar="FILE", help="trained checkpoint "
                        "(default repair.checkpoint)")
    parser.add_argument("--mask", metavar="FILE.npy", help="dead-block mask [plane, view, bin]")
    parser.add_argument("--scanner", metavar="NAME",
                        help="scanner preset to compute the mask from (with --dead-blocks)")
    parser.add_argument("--dead-blocks", metavar="T:A[,T:A...]|auto",
                        help="dead blocks (transaxial:axial block index), or auto: found in "
                             "each scan by badblock detect")
    parser.add_argument("--no-mask-check", action="store_true",
                        help="use the mask even where it contradicts the scan's counts "
                             "(logged in the summary)")
    parser.add_argument("--mu", metavar="FILE.npy", action="append",
                        help="attenuation map [z, y, x] in 1/mm on the scanner's image grid, "
                             "for a network that takes the model-based fill (model.fill_prior) "
                             "trained with attenuation: once for all inputs or once per input, "
                             "in their order")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="plane stacks per network call (default repair.batch_size)")
    parser.add_argument("--force", action="store_true",
                        help="replace existing outputs (never the input itself)")
    parser.add_argument("--self-check", action=argparse.BooleanOptionalAction, default=None,
                        help="weigh the network's correction by what the scan's own counts "
                             "support (default repair.self_check; needs --scanner/"
                             "--dead-blocks or auto)")


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = []
    if args.checkpoint:
        extra.append("repair.checkpoint=" + json.dumps(args.checkpoint))
    if args.batch_size is not None:
        extra.append(f"repair.batch_size={args.batch_size}")
    if args.force:
        extra.append("repair.force=true")
    if args.no_mask_check:
        extra.append("scanner.mask_check=false")
    if args.self_check is not None:
        extra.append(f"repair.self_check={str(args.self_check).lower()}")
    return extra


def _auto_masks(inputs: list[Path], scanner: str | None, cfg) -> tuple[list, list[dict]]:
    """One mask per scan, of the dead blocks and crystals ``detect`` finds in it."""
    from badblock.physics.detect import detect_scan
    from badblock.physics.mask import ResolvedMask

    masks, found = [], []
    for path in inputs:
        det = detect_scan(path, scanner, crystals=cfg.detect.crystals, z=cfg.detect.z)
        s = det.summary()
        print(f"{path}: detect found dead blocks {', '.join(s['dead_blocks']) or 'none'}, dead "
              f"crystals {', '.join(s['dead_crystals']) or 'none'} ({det.scanner.name})")
        masks.append(ResolvedMask(det.mask(), scanner=det.scanner.name, blocks=det.blocks,
                                  crystals=det.crystals))
        found.append({"scan": str(path), **s})
    return masks, found


def _mus(paths: list[str] | None, inputs: list[Path], cfg, predictor) -> list | None:
    """The ``--mu`` maps, one per input (a single one serves every input)."""
    if not paths:
        return None
    if len(paths) not in (1, len(inputs)):
        raise BadInputError("--mu", f"{len(paths)} attenuation maps for {len(inputs)} scans: "
                                    "give one for all, or one per scan")
    if not getattr(predictor.layout, "fill_prior", False):
        raise BadInputError("--mu", "this network does not take the model-based fill: it has "
                                    "no use for an attenuation map")
    from badblock.physics.phantom import load_mu_map
    from badblock.physics.scanners import get_scanner

    scanner = get_scanner(predictor.data["scanner"])
    maps = [load_mu_map(cfg.data_path(p), scanner) for p in paths]
    return maps * len(inputs) if len(maps) == 1 else maps


def run(args: argparse.Namespace) -> int:
    from badblock.config import save_resolved
    from badblock.inference import load_predictor
    from badblock.physics.mask import resolve_mask
    from badblock.repair import SUMMARY_NAME, output_for, repair_files
    from badblock.utils.atomic import atomic_write_json
    from badblock.utils.memory import peak_rss_mb

    cfg = config_from_args(args, *_overrides(args))
    if not cfg.repair.checkpoint:
        raise BadInputError("--checkpoint", "no checkpoint given (or set repair.checkpoint)")
    if args.mask and (args.scanner or args.dead_blocks):
        raise BadInputError("--mask", "give either --mask or --scanner/--dead-blocks, not both")
    out = Path(args.output) if args.output else cfg.output_path(cfg.repair.output)
    inputs = [cfg.data_path(p) for p in args.inputs]
    predictor = load_predictor(cfg.data_path(cfg.repair.checkpoint), cfg.run.device,
                               cfg.run.threads)
    extra: dict = {}
    check, why = cfg.scanner.mask_check, "switched off (--no-mask-check)"
    if args.dead_blocks == "auto":
        declared, found = _auto_masks(inputs, args.scanner, cfg)
        mask, what = [d.mask for d in declared], "found by detect in each scan"
        check, why = False, "the mask is what detect found in the scan itself"
        extra["detect"] = found
    else:
        resolved = resolve_mask(cfg.scanner, mask_path=args.mask, scanner=args.scanner,
                                dead_blocks=args.dead_blocks, data_root=cfg.run.data)
        mask, what, declared = resolved.mask, resolved.describe(), resolved
    print(f"mask: {what}; checkpoint {cfg.repair.checkpoint} on {predictor.device}")
    summaries = repair_files(inputs, mask, predictor, out, batch_size=cfg.repair.batch_size,
                             force=cfg.repair.force, all_planes=cfg.repair.all_planes,
                             mask_check=check, unchecked_why=why, declared=declared, log=print,
                             mus=_mus(args.mu, inputs, cfg, predictor),
                             self_check=cfg.repair.self_check)
    folder = output_for(inputs[0], out, len(inputs)).parent
    save_resolved(cfg, folder)
    atomic_write_json(folder / SUMMARY_NAME, {
        "checkpoint": str(cfg.repair.checkpoint), "mask": what, **extra,
        "device": str(predictor.device), "peak_rss_mb": round(peak_rss_mb(), 1),
        "scans": summaries})
    for s in summaries:
        check_line = "mask checked against the counts" if s["mask_check"]["checked"] else \
            f"mask not checked: {s['mask_check']['why']}"
        print(f"{s['input']} -> {s['output']}: {s['planes_repaired']} of {s['planes']} planes "
              f"repaired x {s['tof_bins']} TOF ({s['plane_images_per_s']} plane images/s), "
              f"{s['planes_copied']} copied; {check_line}")
        if s["self_check"]["ran"]:
            w = s["self_check"]["weights"]
            print(f"  correction weights from the self-check: partly damaged {w['partial']}, "
                  f"fully dead {w['dead']}")
    return 0
