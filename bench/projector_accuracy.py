"""Accuracy of the fast projector's settings against the LOR-by-LOR reference projector.

For each case (a scanner, a random phantom with its water mu-map, some views) the reference
``physics.projector.project`` (sampling at half a voxel) is compared bin by bin with
``FastProjector`` in each setting, without and with attenuation:

- ``mini``: all 36 views;
- ``vision-10``: the Vision's crystals, mashing, bins and TOF on 10 rings (span 7), 2 views;
- ``vision-20``: the Vision's span 19 on 20 rings (three segments of its real structure), 2
  views (skipped with ``--tiny``).

Errors: ``l1`` = sum |fast - ref| / sum ref, ``l2`` likewise for squares, ``total`` = sum fast /
sum ref - 1, and the median and 99th percentile of |fast - ref| / ref over bins above 1 % of
the maximum.

    python bench/projector_accuracy.py           # writes bench/results/projector_accuracy.json
    python bench/projector_accuracy.py --tiny    # mini and vision-10, 2 and 1 views (CI)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from badblock.physics.fastgeom import default_options  # noqa: E402
from badblock.physics.fastproj import FastProjector  # noqa: E402
from badblock.physics.phantom import random_phantom, render  # noqa: E402
from badblock.physics.projector import project, scanner_geometry  # noqa: E402
from badblock.physics.scanners import get_scanner  # noqa: E402
from badblock.utils.atomic import atomic_write_json  # noqa: E402

CASES = {
    "mini": (lambda: get_scanner("mini"), None),
    "vision-10": (lambda: get_scanner("vision", rings_per_block=5, blocks_axial=2, span=7,
                                      max_ring_diff=9), [3, 29]),
    "vision-20": (lambda: get_scanner("vision", blocks_axial=2, max_ring_diff=19), [3, 29]),
}
SETTINGS = {
    "exact geometry": {"subviews": "all", "tilts": "ring", "pool": 1},
    "mean rays, every ring pair": {"subviews": "mean", "tilts": "ring"},
    "mean rays, 3 tilts/plane": {"subviews": "mean", "tilts": 3},
    "mean rays, 2 tilts/plane": {"subviews": "mean", "tilts": 2},
    "mean rays, 1 tilt/plane": {"subviews": "mean", "tilts": 1},
}
TINY_VIEWS = {"mini": [0, 9], "vision-10": [3]}  # the reference projector is the slow part


def errors(got: np.ndarray, ref: np.ndarray) -> dict:
    err = np.abs(got - ref)
    bright = ref > 0.01 * ref.max()
    rel = err[bright] / ref[bright]
    return {"l1": float(err.sum() / ref.sum()),
            "l2": float(np.sqrt((err ** 2).sum() / (ref ** 2).sum())),
            "total": float(got.sum() / ref.sum() - 1),
            "median_rel": float(np.median(rel)), "p99_rel": float(np.quantile(rel, 0.99))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="mini and vision-10, a view or two")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cases = ["mini", "vision-10"] if args.tiny else list(CASES)
    result: dict = {"command": "python bench/projector_accuracy.py" +
                    (" --tiny" if args.tiny else ""), "cases": {}}
    for name in cases:
        make, views = CASES[name]
        views = TINY_VIEWS[name] if args.tiny else views
        scanner = make()
        geom = scanner_geometry(scanner)
        shapes = random_phantom(geom.grid, np.random.default_rng(2), geom.fov_radius_mm)
        act, mu = render(shapes, geom.grid), render(shapes, geom.grid, "mu")
        vlist = views or list(range(scanner.n_views))
        fast_pool = default_options(get_scanner("vision"))["pool"] if name != "mini" else 2
        case: dict = {"shape": list(scanner.shape), "views": vlist, "settings": {}}
        for with_mu in (False, True):
            m = mu if with_mu else None
            t0 = time.perf_counter()
            ref = np.concatenate([project(geom, act, m, step_mm=geom.grid.voxel_mm[1] / 2,
                                          views=(v, v + 1))[0] for v in vlist], axis=2)
            print(f"{name} mu={with_mu}: reference {time.perf_counter() - t0:.0f} s", flush=True)
            for label, opts in SETTINGS.items():
                opts = {"pool": fast_pool, **opts}
                proj = FastProjector(scanner, m, **opts)
                err = errors(proj.forward(act, vlist).numpy(), ref)
                case["settings"].setdefault(label, {"options": opts})[
                    "with_mu" if with_mu else "no_mu"] = err
                print(f"  {label:28s} l1 {err['l1']:.4f} l2 {err['l2']:.4f} total "
                      f"{err['total']:+.5f} median {err['median_rel']:.4f} p99 "
                      f"{err['p99_rel']:.4f}", flush=True)
        result["cases"][name] = case
    out = Path(args.out or ROOT / "bench" / "results" / (
        "projector_accuracy_tiny.json" if args.tiny else "projector_accuracy.json"))
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
