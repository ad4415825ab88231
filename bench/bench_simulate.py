"""Time `badblock simulate`: seconds per mini scan; one Vision scan extrapolated from a few views.

    python bench/bench_simulate.py --scans 8              # the demo's dataset on mini
    python bench/bench_simulate.py --vision-views 1       # Vision: project 1 of 50 views, x 50

Prints wall-clock seconds and peak resident memory; nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from badblock.config import load_config
from badblock.physics.phantom import random_phantom, render
from badblock.physics.projector import project, scanner_geometry
from badblock.physics.scanners import get_scanner
from badblock.physics.simulate import simulate
from badblock.utils.memory import peak_rss_mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=8, help="mini scans to simulate (0 = skip)")
    ap.add_argument("--vision-views", type=int, default=0,
                    help="Vision views to project for the extrapolation (0 = skip)")
    ap.add_argument("--step-mm", type=float, default=0.0, help="simulate.step_mm (0 = default)")
    args = ap.parse_args()
    if args.scans:
        cfg = load_config("demo", [f"simulate.scans={args.scans}",
                                   f"simulate.step_mm={args.step_mm}"])
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            simulate(cfg, Path(tmp) / "sim")
            dt = time.perf_counter() - t0
        print(f"mini: {args.scans} scans in {dt:.1f} s = {dt / args.scans:.2f} s per scan "
              f"(peak RSS {peak_rss_mb():.0f} MB)")
    if args.vision_views:
        vision = get_scanner("vision")
        t0 = time.perf_counter()
        geom = scanner_geometry(vision)
        shapes = random_phantom(geom.grid, np.random.default_rng(0), geom.fov_radius_mm)
        act, mu = render(shapes, geom.grid), render(shapes, geom.grid, "mu")
        setup = time.perf_counter() - t0
        step = args.step_mm or geom.grid.voxel_mm[1]
        t0 = time.perf_counter()
        project(geom, act, mu, step_mm=step, views=(0, args.vision_views))
        dt = time.perf_counter() - t0
        per_scan = dt / args.vision_views * vision.n_views
        print(f"vision: grid {geom.grid.shape}, setup {setup:.1f} s; {args.vision_views} of "
              f"{vision.n_views} views in {dt:.1f} s at step {step:.2f} mm -> about "
              f"{per_scan / 3600:.1f} h per scan (peak RSS {peak_rss_mb():.0f} MB)")


if __name__ == "__main__":
    main()
