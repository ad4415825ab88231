"""Find the dead blocks (and dead single crystals) of a scanner from damaged scans themselves.

No normalisation file and no truth: a dead crystal records nothing, so its bins are thinned
(and those all of whose LORs it holds are empty) against counts estimated from the rest of the
scan. Each block and crystal is dead, alive, or "cannot decide" when the evidence falls short
of --z standard deviations: too few counts on its LORs, or too small a share of its bins' LORs
to tell from the error of the estimate (said so, never guessed; docs/detect.md). For each scan
writes OUT/<name>.mask.npy (the mask of what was found, float32 [plane, view, bin], as
`badblock mask` writes it) and OUT/<name>.detect.png, and for all of them OUT/detect.json and
the resolved config. Example:

    badblock detect --scanner vision scans/frame1.s.hdr -o detect/
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from badblock.commands.common import add_config_arguments, config_from_args
from badblock.errors import BadInputError

HELP = "find dead blocks and crystals from damaged scans themselves; write their masks"
SUMMARY_NAME = "detect.json"
_SUFFIXES = (".s.hdr", ".hs", ".hdr", ".s", ".npy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("scans", nargs="+", metavar="SCAN",
                        help="damaged scans: prompts (header file, or flat data with a sidecar)")
    parser.add_argument("--scanner", metavar="NAME", help="scanner preset (default: the scan "
                        "header's, else the one preset of the scan's shape)")
    parser.add_argument("--z", type=float, metavar="Z",
                        help="evidence a verdict needs, in standard deviations (detect.z)")
    parser.add_argument("--no-crystals", action="store_true",
                        help="search whole blocks only (detect.crystals=false)")
    parser.add_argument("--json", action="store_true", help="print the JSON summary")
    parser.add_argument("--force", action="store_true", help="replace existing outputs")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _plot(det, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    mask = det.mask()
    per_plane = mask.sum(axis=(1, 2))
    plane = int(np.argmax(per_plane)) if per_plane.any() else int(
        np.argmax(det.counts.sum(axis=(1, 2))))
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained",
                                   gridspec_kw={"width_ratios": [1.3, 1]})
    im = ax0.imshow(np.clip(det.block_theta, -0.2, 1.2), vmin=0, vmax=1, cmap="viridis",
                    aspect="auto", interpolation="nearest")
    for t, a in det.blocks:
        ax0.text(t, a, "dead", ha="center", va="center", color="red", fontsize=7)
    for t, a in det.undecided_blocks:
        ax0.text(t, a, "?", ha="center", va="center", color="white")
    ax0.set_xticks(range(det.block_theta.shape[1]))
    ax0.set_yticks(range(det.block_theta.shape[0]))
    ax0.tick_params(labelsize=7)
    ax0.set_xlabel("transaxial block")
    ax0.set_ylabel("axial block")
    ax0.set_title("deadness per block (1 dead, 0 alive, ? cannot decide)", fontsize=9)
    fig.colorbar(im, ax=ax0)
    ax1.imshow(det.counts[plane], cmap="gray", aspect="auto", interpolation="nearest")
    if mask[plane].any():
        ax1.contour(mask[plane], levels=[0.01, 0.999], colors=["orange", "red"],
                    linewidths=0.8)
    ax1.set_title(f"plane {plane} (TOF summed): lost > 0 orange, all red", fontsize=9)
    ax1.set_xlabel("bin")
    ax1.set_ylabel("view")
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _report(path: Path, det) -> list[str]:
    s = det.summary()
    lines = [f"{path}: {det.scanner.name}, dead blocks: {', '.join(s['dead_blocks']) or 'none'};"
             f" dead crystals: {', '.join(s['dead_crystals']) or 'none'}"]
    for v in s["evidence"]:
        lines.append(f"  {v['kind']} {v['index']}: deadness {v['theta']:.2f} +- {v['sd']:.2f}, "
                     f"{v['fully_dead_bins']} fully dead bins hold "
                     f"{v['counts_in_fully_dead_bins']:.0f} counts "
                     f"({v['expected_there_if_alive']:.0f} expected if alive)")
    if s["undecided_blocks"]:
        lines.append(f"  cannot decide (not enough evidence) for blocks: "
                     f"{', '.join(s['undecided_blocks'])}")
    if s["undecided_crystals"]:
        lines.append(f"  cannot decide (not enough evidence) for {s['undecided_crystals']} of "
                     f"{s['crystal_candidates']} crystals")
    return lines


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from badblock.config import save_resolved
    from badblock.physics.detect import detect_scan
    from badblock.utils.atomic import atomic_path, atomic_write_bytes, atomic_write_json

    extra = []
    if args.z is not None:
        extra.append(f"detect.z={args.z!r}")
    if args.no_crystals:
        extra.append("detect.crystals=false")
    cfg = config_from_args(args, *extra)
    out = Path(args.output) if args.output else cfg.output_path("detect")
    scans = [cfg.data_path(p) for p in args.scans]
    stems = [_stem(p) for p in scans]
    if len(set(stems)) != len(stems):
        raise BadInputError("scans", "two scans share a name; their masks would collide")
    targets = [out / f"{s}.mask.npy" for s in stems]
    for t in targets + [out / SUMMARY_NAME]:
        if t.exists() and not args.force:
            raise BadInputError(t, "already exists (use --force to replace it)")

    results = []
    for path, target in zip(scans, targets):
        det = detect_scan(path, args.scanner, crystals=cfg.detect.crystals, z=cfg.detect.z)
        mask = det.mask()
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            np.save(fh, mask, allow_pickle=False)
        atomic_write_bytes(target.with_name(target.name[:-len(".mask.npy")] + ".detect.png"),
                           _plot(det, f"{path.name}: {det.scanner.name}"))
        results.append({"scan": str(path), "mask": str(target), **det.summary()})
        if not args.json:
            print("\n".join(_report(path, det)))
    atomic_write_json(out / SUMMARY_NAME, {"scans": results})
    save_resolved(cfg, out)
    if args.json:
        print(json.dumps({"scans": results}, indent=2))
    else:
        print(f"wrote {out} ({SUMMARY_NAME}, a .mask.npy and .detect.png per scan)")
    return 0
