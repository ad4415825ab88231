"""Benchmark `badblock simulate`: the fast projector against the LOR-by-LOR reference.

Measured side by side in one run, each measurement in its own process (so its peak RSS is its
own), on the same random phantom with attenuation:

- mini: whole ``simulate`` runs (``simulate.projector=exact`` and ``=fast``), seconds per scan;
  and the projection alone (reference ``project`` vs ``FastProjector.forward``, all views).
- Vision: the reference projects ``--vision-views`` views and is extrapolated x 50 / views (it
  takes minutes per view, hours per scan: the extrapolation is said so in the output); the
  fast projector projects all 50 views; then one whole ``simulate`` of a Vision scan with the
  fast projector (phantom, projection, Poisson draw, writing 4.2 GB), whose wall time minus the
  projection's is the time spent outside the projector.

    python bench/bench_simulate.py                   # mini + Vision; writes simulate.json
    python bench/bench_simulate.py --tiny            # seconds: mini + a 10-ring Vision, 1 view

Peak RSS of the whole ``simulate`` includes the memory-mapped output files' pages. Prints a
table and ratios; writes ``bench/results/simulate.json`` (``simulate_tiny.json`` with
``--tiny``). Not a test: absolute times are noisy on a shared machine; the ratios are measured in
the same run and the load average at the start is recorded. On a machine that other jobs keep
busy, OpenMP's spinning barriers slow every small torch operation several-fold
(``OMP_WAIT_POLICY=PASSIVE`` avoids that); the ``OMP_*``/``MKL_*`` settings are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_VISION_S = 180.0  # one full Vision scan simulated in at most 3 minutes


def _scanner(name: str):
    from badblock.physics.scanners import get_scanner

    if name == "vision-short":  # the Vision's crystals, bins, mashing and TOF on 10 rings
        return get_scanner("vision", rings_per_block=5, blocks_axial=2, span=7, max_ring_diff=9)
    return get_scanner(name)


def _phantom(scanner):
    import numpy as np

    from badblock.physics.phantom import random_phantom, render
    from badblock.physics.projector import scanner_geometry

    geom = scanner_geometry(scanner)
    shapes = random_phantom(geom.grid, np.random.default_rng(0), geom.fov_radius_mm)
    return geom, render(shapes, geom.grid), render(shapes, geom.grid, "mu")


def child(task: dict) -> dict:
    """One measurement, run in a fresh process: returns seconds and peak RSS."""
    import torch

    from badblock.utils.memory import peak_rss_mb

    scanner = _scanner(task["scanner"])
    out: dict = {"threads": torch.get_num_threads()}
    if task["kind"] == "simulate":
        from badblock.config import load_config
        from badblock.physics.simulate import simulate

        cfg = load_config(None, [f"scanner.name={scanner.name}", *task["overrides"]])
        with tempfile.TemporaryDirectory(dir=task.get("tmp")) as tmp:
            t0 = time.perf_counter()
            simulate(cfg, Path(tmp) / "sim", scanner=scanner)
            out["seconds"] = time.perf_counter() - t0
    else:
        geom, act, mu = _phantom(scanner)
        views = range(task.get("views", scanner.n_views))
        t0 = time.perf_counter()
        if task["kind"] == "exact":
            from badblock.physics.projector import project

            project(geom, act, mu, step_mm=geom.grid.voxel_mm[1], views=(0, len(views)))
        else:
            from badblock.physics.fastproj import FastProjector
            from badblock.physics.projector import support_radius

            proj = FastProjector(scanner, mu, support_mm=support_radius(geom.grid, act, mu))
            out["options"] = {"subviews": proj.subviews, "tilts": proj.tilts, "pool": proj.pool}
            for v0 in range(0, len(views), 4):  # in chunks, as simulate does
                proj.forward(act, views[v0:v0 + 4])
        out["seconds"] = time.perf_counter() - t0
        out["views"] = len(views)
        out["seconds_per_scan"] = out["seconds"] * scanner.n_views / len(views)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = usage.ru_utime + usage.ru_stime  # all threads: the work, without the waits
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() \
            else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_child(task: dict) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", json.dumps(task)],
                         capture_output=True, text=True, env={**os.environ,
                                                              "BADBLOCK_PROGRESS": "0"})
    if res.returncode:
        raise SystemExit(f"measurement {task} failed:\n{res.stderr}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"  {task['scanner']:12s} {task['kind']:8s} {out['seconds']:8.1f} s  "
          f"(CPU {out['cpu_s']:.1f} s, peak RSS {out['peak_rss_mb']:.0f} MB)", flush=True)
    return {"task": task, **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="seconds: mini + a 10-ring Vision")
    ap.add_argument("--scans", type=int, default=4, help="scans per mini simulate run")
    ap.add_argument("--vision-views", type=int, default=1,
                    help="views the reference projects for its Vision extrapolation")
    ap.add_argument("--vision-counts", type=float, default=5e8, help="expected prompts")
    ap.add_argument("--tmp", default=None, help="folder for the simulated Vision scan")
    ap.add_argument("--out", default=None, help="results JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    big = "vision-short" if args.tiny else "vision"
    scans = 1 if args.tiny else args.scans
    load = os.getloadavg()[0]
    print(f"load average at start {load:.2f} on {os.cpu_count()} CPUs")
    sims = {kind: run_child({"kind": "simulate", "scanner": "mini", "overrides": [
        f"simulate.scans={scans}", f"simulate.projector={kind}"]}) for kind in ("exact", "fast")}
    mini = {kind: run_child({"kind": kind, "scanner": "mini"}) for kind in ("exact", "fast")}
    ref = run_child({"kind": "exact", "scanner": big, "views": args.vision_views})
    fast = run_child({"kind": "fast", "scanner": big})
    whole = run_child({"kind": "simulate", "scanner": big, "tmp": args.tmp, "overrides": [
        "simulate.scans=1", "simulate.projector=fast", f"simulate.counts={args.vision_counts}"]})
    result = {
        "command": "python bench/bench_simulate.py" + (" --tiny" if args.tiny else ""),
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, load average {load:.2f} at start, "
                   f"{os.getloadavg()[0]:.2f} at the end (shared machine)",
        "mini": {
            "simulate_s_per_scan": {k: v["seconds"] / scans for k, v in sims.items()},
            "simulate_speedup_fast_vs_exact": sims["exact"]["seconds"] / sims["fast"]["seconds"],
            "projection_s_per_scan": {k: v["seconds_per_scan"] for k, v in mini.items()},
            "projection_speedup": mini["exact"]["seconds_per_scan"]
            / mini["fast"]["seconds_per_scan"],
            "fast_options": mini["fast"]["options"],
            "peak_rss_mb": {f"simulate_{k}": v["peak_rss_mb"] for k, v in sims.items()},
        },
        big: {
            "exact_projection_s_per_scan": ref["seconds_per_scan"],
            "exact_note": f"reference timed on {ref['views']} of 50 views, extrapolated x "
                          f"{50 / ref['views']:g}",
            "fast_projection_s_per_scan": fast["seconds_per_scan"],
            "projection_speedup": ref["seconds_per_scan"] / fast["seconds_per_scan"],
            "fast_options": fast["options"],
            "simulate_fast_s": whole["seconds"],
            "simulate_fast_cpu_s": whole["cpu_s"],
            "outside_projector_s": whole["seconds"] - fast["seconds"],
            "target_s": TARGET_VISION_S if big == "vision" else None,
            "peak_rss_mb": {"exact_projection": ref["peak_rss_mb"],
                            "fast_projection": fast["peak_rss_mb"],
                            "simulate_fast": whole["peak_rss_mb"]},
        },
        "threads": fast["threads"],
        "environment": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "MKL_"))},
        "runs": [sims["exact"], sims["fast"], mini["exact"], mini["fast"], ref, fast, whole],
    }
    m, b = result["mini"], result[big]
    print(f"mini: simulate {m['simulate_s_per_scan']['exact']:.2f} s/scan exact, "
          f"{m['simulate_s_per_scan']['fast']:.2f} fast; projection "
          f"{m['projection_speedup']:.1f} x faster")
    print(f"{big}: projection {b['exact_projection_s_per_scan']:.0f} s/scan exact "
          f"({b['exact_note']}), {b['fast_projection_s_per_scan']:.1f} fast = "
          f"{b['projection_speedup']:.0f} x; whole simulate {b['simulate_fast_s']:.1f} s, of which "
          f"{b['outside_projector_s']:.1f} s outside the projector")
    from badblock.utils.atomic import atomic_write_json

    out = Path(args.out or ROOT / "bench" / "results" /
               ("simulate_tiny.json" if args.tiny else "simulate.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
