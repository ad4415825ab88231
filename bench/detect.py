"""Benchmark: how often `detect` is wrong, and what `check_mask` costs on a full Vision scan.

Rates. For every count level (the demo's ``simulate.counts`` and 0.1 x) and scenario, one
``mini`` scan per seed is simulated with the simulator's LOR-level damage (its projector drops
the LORs through dead crystals: ground truth independent of the mask code) and
``badblock.physics.detect.detect`` runs on the damaged prompts. Scenarios, positions drawn from
the seed: none, one block, two transaxial neighbours, two axial neighbours, three blocks
anywhere, three single crystals. Per level and scenario: misses (true dead not found, split
into "alive" verdicts and "cannot decide"), false positives (found but not dead) per scan and
per alive candidate, and the share of scans with exactly the true blocks and crystals.

Validation (``--validate``): the expected-count kernel widths are chosen on seeds 1000+ (never
the benchmark's 0..N-1) by the fewest wrong verdicts, then misses, then "cannot decide"; the
result is bench/results/detect_validation.json and the choice is ``deadsearch.WIDTHS``.

Timing (``--timing``): a synthetic Vision scan [33, 815, 50, 520] uint16 (Poisson counts of a
smooth activity per LOR, block 3:1 dead) is written to a temporary e7 file and memory-mapped;
``check_mask`` with the right mask, ``detect`` (blocks only, and with crystals) are timed
against reading the scan once (TOF sum by plane, the floor), side by side in one run.

    python bench/detect.py --seeds 20 --timing        # -> bench/results/detect.json
    python bench/detect.py --validate --seeds 8       # -> bench/results/detect_validation.json
    python bench/detect.py --timing-only              # redo the Vision timing in detect.json
    python bench/detect.py --tiny --out FILE          # CI: one seed, the timing on ``mini``
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCENARIOS = ("none", "one", "adjacent_transaxial", "adjacent_axial", "three", "crystals")
WIDTH_GRID = ((1.0, 1.0), (1.5, 1.0), (2.0, 1.0), (1.5, 2.0), (3.0, 1.5))


def damage(scenario: str, sc, rng) -> tuple[list, list]:
    """Dead blocks (T, A) and crystals (c, r) of a scenario, drawn with ``rng``."""
    n_t, n_a = sc.blocks_transaxial, sc.blocks_axial
    t, a = int(rng.integers(n_t)), int(rng.integers(n_a))
    if scenario == "none":
        return [], []
    if scenario == "one":
        return [(t, a)], []
    if scenario == "adjacent_transaxial":
        return [(t, a), ((t + 1) % n_t, a)], []
    if scenario == "adjacent_axial":
        a = int(rng.integers(n_a - 1))
        return [(t, a), (t, a + 1)], []
    if scenario == "three":
        flat = rng.choice(n_t * n_a, size=3, replace=False)
        return [(int(f) % n_t, int(f) // n_t) for f in flat], []
    real = [(c, r) for r in range(sc.n_rings) for c in range(sc.crystals_per_ring)
            if c % sc.block_pitch < sc.crystals_per_block]
    return [], [real[int(i)] for i in rng.choice(len(real), size=3, replace=False)]


def simulate_damaged(folder: Path, blocks, crystals, counts: float, seed: int):
    import numpy as np

    from badblock.config import load_config
    from badblock.io import read_scan
    from badblock.physics.simulate import simulate

    cfg = load_config(None, [
        "simulate.scans=1", f"simulate.counts={counts!r}", f"simulate.seed={seed}",
        "simulate.dead_blocks=" + json.dumps([f"{t}:{a}" for t, a in blocks]),
        "simulate.dead_crystals=" + json.dumps([f"{c}:{r}" for c, r in crystals])], env={})
    out = simulate(cfg, folder / f"s{seed}", force=True)
    sub = out / "damaged" if (blocks or crystals) else out
    return np.asarray(read_scan(sub / "scan_000.hs").data)


def run_detect(data, sc, widths=None):
    from badblock.physics.deadsearch import Model, search
    from badblock.physics.detect import tof_sum
    from badblock.physics.mask import lost_lor_count

    model = Model(tof_sum(data), sc, widths) if widths else Model(tof_sum(data), sc)
    return search(model, lambda b, c: lost_lor_count(sc, b, c))


def rates(seeds, levels, widths=None, log=print) -> dict:
    import numpy as np

    from badblock.physics.scanners import get_scanner

    sc = get_scanner("mini")
    n_blocks = sc.blocks_transaxial * sc.blocks_axial
    n_crystals = sc.n_rings * sc.blocks_transaxial * sc.crystals_per_block
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, counts in levels.items():
            for scenario in SCENARIOS:
                tally = dict(scans=0, true_blocks=0, missed_blocks=0, undecided_true_blocks=0,
                             false_blocks=0, true_crystals=0, missed_crystals=0,
                             undecided_true_crystals=0, false_crystals=0, exact=0,
                             undecided_blocks=0, undecided_crystals=0, seconds=0.0)
                for seed in seeds:
                    rng = np.random.default_rng([seed, SCENARIOS.index(scenario)])
                    blocks, crystals = damage(scenario, sc, rng)
                    data = simulate_damaged(Path(tmp), blocks, crystals, counts, seed)
                    t0 = time.perf_counter()
                    found = run_detect(data, sc, widths)
                    tally["seconds"] += time.perf_counter() - t0
                    und_b = set(found.undecided["block"])
                    und_c = set(found.undecided.get("crystal", []))
                    fb, fc = set(found.blocks), set(found.crystals)
                    tally["scans"] += 1
                    tally["true_blocks"] += len(blocks)
                    tally["missed_blocks"] += len(set(blocks) - fb)
                    tally["undecided_true_blocks"] += len(set(blocks) & und_b)
                    tally["false_blocks"] += len(fb - set(blocks))
                    tally["true_crystals"] += len(crystals)
                    tally["missed_crystals"] += len(set(crystals) - fc)
                    tally["undecided_true_crystals"] += len(set(crystals) & und_c)
                    tally["false_crystals"] += len(fc - set(crystals))
                    tally["undecided_blocks"] += len(und_b)
                    tally["undecided_crystals"] += len(und_c)
                    tally["exact"] += int(fb == set(blocks) and fc == set(crystals))
                s = tally["scans"]
                alive_b = s * n_blocks - tally["true_blocks"]
                alive_c = s * n_crystals - tally["true_crystals"]
                tally.update(
                    block_miss_rate=tally["missed_blocks"] / max(tally["true_blocks"], 1),
                    crystal_miss_rate=tally["missed_crystals"] / max(tally["true_crystals"], 1),
                    false_blocks_per_scan=tally["false_blocks"] / s,
                    false_crystals_per_scan=tally["false_crystals"] / s,
                    block_false_positive_rate=tally["false_blocks"] / alive_b,
                    crystal_false_positive_rate=tally["false_crystals"] / alive_c,
                    exact_share=tally["exact"] / s,
                    seconds_per_scan=round(tally.pop("seconds") / s, 3))
                out.setdefault(name, {})[scenario] = tally
                log(f"{name:>5} {scenario:20s} exact {tally['exact']}/{s}  blocks: missed "
                    f"{tally['missed_blocks']}/{tally['true_blocks']} (undecided "
                    f"{tally['undecided_true_blocks']}), false {tally['false_blocks']}  "
                    f"crystals: missed {tally['missed_crystals']}/{tally['true_crystals']} "
                    f"(undecided {tally['undecided_true_crystals']}), false "
                    f"{tally['false_crystals']}  {tally['seconds_per_scan']} s/scan")
    return out


def totals(result: dict) -> dict:
    keys = ("missed_blocks", "false_blocks", "missed_crystals", "false_crystals",
            "undecided_true_blocks", "undecided_true_crystals", "undecided_blocks",
            "undecided_crystals")
    return {k: sum(sc[k] for lvl in result.values() for sc in lvl.values()) for k in keys}


def timing(scanner: str = "vision", log=print) -> dict:
    """check_mask and detect on a synthetic full-size scan of ``scanner``, against one read."""
    import numpy as np

    from badblock.io import ScanHeader, open_scan_writer, read_scan
    from badblock.physics.detect import check_mask, detect, tof_sum
    from badblock.physics.mask import dead_block_mask, real_lor_count
    from badblock.physics.scanners import get_scanner

    sc = get_scanner(scanner)
    mask = dead_block_mask(sc, "3:1")
    n = real_lor_count(sc).astype(np.float32)
    rng = np.random.default_rng(0)
    _, n_planes, n_views, n_bins = sc.shape
    e = np.arange(n_bins) - n_bins / 2
    v = np.arange(n_views)[:, None]
    body = np.exp(-0.5 * ((e - 40 * np.sin(2 * np.pi * v / n_views)) / 90) ** 2)  # [V, B]
    tof = np.exp(-0.5 * ((np.arange(sc.n_tof) - sc.n_tof // 2) / 5.0) ** 2)
    tof = (tof / tof.sum()).astype(np.float32)[:, None, None, None]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{scanner}.s.hdr"
        header = ScanHeader(format="e7", shape=sc.shape, dtype="<u2", data_file=path,
                            segments=list(sc.segments), tof_order="siemens", scanner=scanner,
                            header_path=path)
        t0 = time.perf_counter()
        with open_scan_writer(path, header) as w:
            for p0 in range(0, n_planes, 32):
                lam = (0.6 * n[p0:p0 + 32] * body * (1 - mask[p0:p0 + 32]))[None] * tof
                w.data[:, p0:p0 + 32] = rng.poisson(lam).astype(np.uint16)
        log(f"wrote synthetic Vision scan in {time.perf_counter() - t0:.0f} s")
        scan = read_scan(path)
        tof_sum(scan.data)  # warm the page cache: every timing below reads from memory
        for name, fn in (("read_tof_sum", lambda: tof_sum(scan.data)),
                         ("check_mask", lambda: check_mask(scan.data, mask, sc)),
                         ("detect_blocks", lambda: detect(scan.data, sc, crystals=False)),
                         ("detect_blocks_and_crystals", lambda: detect(scan.data, sc))):
            t0 = time.perf_counter()
            result = fn()
            out[name] = {"seconds": time.perf_counter() - t0}  # rounded after the ratios
            if name.startswith("detect"):
                summary = result.summary()
                out[name]["found"] = summary["dead_blocks"] + summary["dead_crystals"]
                out[name]["undecided_blocks"] = len(summary["undecided_blocks"])
                out[name]["undecided_crystals"] = summary["undecided_crystals"]
                out[name]["crystal_candidates"] = summary["crystal_candidates"]
            log(f"{name:28s} {out[name]['seconds']:7.2f} s")
        base = out["read_tof_sum"]["seconds"]
        for rec in out.values():
            rec["ratio_to_read"] = round(rec["seconds"] / base, 2)
            rec["seconds"] = round(rec["seconds"], 3)
    return {"scan": list(sc.shape), "dtype": "uint16", "dead_block": "3:1", **out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="scans per level and scenario")
    ap.add_argument("--validate", action="store_true",
                    help="choose the kernel widths on validation seeds 1000+")
    ap.add_argument("--timing", action="store_true", help="also time a full-size Vision scan")
    ap.add_argument("--timing-only", action="store_true",
                    help="time the Vision scan only, replacing that part of the results file")
    ap.add_argument("--tiny", action="store_true",
                    help="CI: one seed per level and scenario, the timing on the mini scanner "
                         "(figures mean nothing; needs --out)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.tiny and not args.out:
        ap.error("--tiny needs --out (its figures are not results)")

    from badblock.config import load_config
    from badblock.physics.deadsearch import WIDTHS, Z_DEFAULT
    from badblock.utils.atomic import atomic_write_json

    demo = load_config("demo", [], env={}).simulate.counts
    levels = {"demo": demo, "0.1x": demo / 10}
    meta = {"machine": platform.platform(), "python": platform.python_version(),
            "note": "shared, loaded 2-core machine; times are indicative, rates are not"}
    if args.validate:
        seeds = list(range(1000, 1000 + args.seeds))
        grid = {}
        for widths in WIDTH_GRID:
            print(f"== widths {widths}")
            grid[str(list(widths))] = totals(rates(seeds, levels, widths))

        def cost(k):  # wrong verdicts, then misses of any kind, then "cannot decide"
            g = grid[k]
            missed = g["missed_blocks"] + g["missed_crystals"]
            wrong = g["false_blocks"] + g["false_crystals"] + missed \
                - g["undecided_true_blocks"] - g["undecided_true_crystals"]
            return wrong, missed, g["undecided_blocks"] + g["undecided_crystals"]

        best = min(grid, key=cost)
        result = {**meta, "seeds": seeds, "grid": grid, "best": best}
        path = args.out or ROOT / "bench" / "results" / "detect_validation.json"
    elif args.timing_only:
        path = args.out or ROOT / "bench" / "results" / "detect.json"
        result = json.loads(path.read_text()) if path.exists() else dict(meta)
        result["vision_timing"] = timing()
    else:
        seeds = list(range(1 if args.tiny else args.seeds))
        result = {**meta, "seeds": seeds, "levels": levels, "widths": list(WIDTHS),
                  "z": Z_DEFAULT, "scanner": "mini", "rates": rates(seeds, levels)}
        if args.tiny:
            result["mini_timing"] = timing("mini")
        elif args.timing:
            result["vision_timing"] = timing()
        path = args.out or ROOT / "bench" / "results" / "detect.json"
    atomic_write_json(path, result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
