"""Training choices compared on validation data only: how the demo preset's loss was chosen.

    python bench/preset_sweep.py                 # the variants below, ~4 min each on 2 cores
    python bench/preset_sweep.py --only lost_f0 complete
    python bench/preset_sweep.py --tiny          # a few steps per variant (CI: the script runs)

Data: the demo's training data (``badblock demo``'s simulate and preprocess: ``demo.train_scans``
phantoms of seed ``run.seed`` = 0 at the preset's counts, its store with ``scanner.dead_blocks``
damage on the held-out validation scans). Never the benchmark suite's data (bench/quality.py):
its seeds start at 8080. Each variant trains ``badblock train --config demo --set ...`` on that
store, on the preset as it was when its loss was chosen (``BEFORE_FILL``); the score is the
damaged-bin NRMSE against the validation scans' noiseless truth of the checkpoint the product
itself keeps (``checkpoint_best.pt``: best unbiased truth-NRMSE estimate from the measured scans,
:func:`badblock.train.validate.nrmse_estimate`), and the best epoch by that rule. Writes
bench/results/preset_sweep.json; docs/training.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> (what it tests, --set overrides on top of the demo preset)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "lost_f0": ("lost counts, every damaged bin alike (the preset)", []),
    "lost_f1": ("lost counts, bin errors weighted by f (inverse variance)",
                ["loss.lost_power=1"]),
    "lost_f2": ("lost counts, weighted by f^2 (error of the lost counts)",
                ["loss.lost_power=2"]),
    "complete": ("complete plane as the target (copies surviving noise)",
                 ["loss.target=complete"]),
    "one_block": ("one dead block per sample instead of 1-3",
                  ["data.blocks_per_sample=[1,1]"]),
}
TINY = ["train.epochs=1", "data.epoch_size=16", "data.batch_size=8", "train.val_batches=1"]
# The preset as it was when its loss was chosen: the network corrected the normconv prior (the
# model-based fill came later, chosen by bench/fill_prior.py on this same store), and every
# scan was simulated at the preset's counts.
BEFORE_FILL = ["model.fill_prior=false", "data.fills=", "simulate.counts_range=[]"]


def make_store(work: Path, tiny: bool, log=print) -> Path:
    """The demo's simulated training scans and their store under ``work`` (reused if there)."""
    from badblock.config import load_config
    from badblock.data.preprocess import preprocess
    from badblock.demo import _stage_config, scan_headers
    from badblock.physics.simulate import simulate

    store = work / "store"
    if (store / "manifest.json").exists():
        return store
    cfg = load_config("demo", [f"run.output={work}", *BEFORE_FILL], env={})
    n = 4 if tiny else cfg.demo.train_scans
    log(f"[sweep] simulating {n} demo training scans (seed {cfg.run.seed})")
    sim = simulate(_stage_config(cfg, simulate={"scans": n, "seed": cfg.run.seed}),
                   work / "sim", force=True)
    pcfg = _stage_config(cfg, preprocess={"inputs": [str(p) for p in scan_headers(sim)],
                                          "store": "store"})
    return Path(preprocess(pcfg, force=True).store)


def score(folder: Path) -> dict:
    """What the run's log says about the checkpoint the product keeps (best ``nrmse_net``)."""
    rows = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if not r.get("partial")]
    best = min(rows, key=lambda r: r["nrmse_net"])
    return {"best_epoch": best["epoch"], "epochs": len(rows),
            "val_truth_nrmse_kept": best.get("nrmse_net_truth"),
            "val_truth_nrmse_per_epoch": [r.get("nrmse_net_truth") for r in rows],
            "val_estimate_kept": best["nrmse_net"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(VARIANTS), help="variants to run")
    ap.add_argument("--work", default=str(ROOT / "badblock-output" / "preset-sweep"))
    ap.add_argument("--out", help="result JSON (default bench/results/preset_sweep[_tiny].json)")
    ap.add_argument("--tiny", action="store_true", help="a few steps per variant")
    ap.add_argument("--threads", type=int, default=1, help="run.threads of each training")
    args = ap.parse_args(argv)
    os.environ.setdefault("BADBLOCK_PROGRESS", "0")
    from badblock.config import load_config
    from badblock.errors import BadInputError
    from badblock.train.loop import train
    from badblock.utils.atomic import atomic_write_json

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out or ROOT / "bench" / "results" /
               f"preset_sweep{'_tiny' if args.tiny else ''}.json")
    try:
        store = make_store(work, args.tiny)
        results = {}
        for name in args.only or list(VARIANTS):
            what, sets = VARIANTS[name]
            base = [f"run.output={work}", f"data.store={store}", f"train.run={name}",
                    f"run.threads={args.threads}", "train.tensorboard=false"]
            cfg = load_config("demo", base + BEFORE_FILL + sets + (TINY if args.tiny else []),
                              env={})
            t0 = time.perf_counter()
            folder = Path(train(cfg))  # a finished run is kept as it is (rerun = reuse)
            results[name] = {"what": what, "sets": sets, **score(folder),
                             "train_s": round(time.perf_counter() - t0, 1)}
            r = results[name]
            print(f"[sweep] {name:10s} validation truth NRMSE of the kept checkpoint "
                  f"{r['val_truth_nrmse_kept']:.4f} (epoch {r['best_epoch']}/{r['epochs']}): "
                  f"{what}")
    except BadInputError as exc:
        print(f"preset_sweep: error: {exc.message}", file=sys.stderr)
        return 2
    command = "python bench/preset_sweep.py" + (" --tiny" if args.tiny else "") + (
        " --only " + " ".join(args.only) if args.only else "")
    atomic_write_json(out, {"command": command,
                            "threads": args.threads, "variants": results})
    print(f"preset_sweep: {len(results)} variant(s) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
