"""Does the model-based fill help the network as an input? Measured on validation data only.

    python bench/fill_prior.py               # fills, then both variants (~20 min on 2 cores)
    python bench/fill_prior.py --tiny --out F  # a few steps (CI: the script runs)

Data: the demo's training store (``bench/preset_sweep.py``'s: ``demo.train_scans`` phantoms of
seed ``run.seed`` = 0; never the benchmark suite's data, whose seeds start at 8080), and a fill
folder (:func:`badblock.data.fills.make_fills`): ``--draws`` damage draws per training scan
(1-3 dead blocks, as training draws them) and one per validation scan (``scanner.dead_blocks``),
each with the model-based fill the benchmark's ``model`` row makes (TOF OSEM 2 x 6 with the
phantom's attenuation, the fast projector's mean-ray model). Both variants are validated on
those same damaged validation draws, so their numbers compare like for like:

- ``normconv``: the network corrects the normconv prior (the demo preset before the fill);
- ``fill``: the same plus ``model.fill_prior`` (the fill as a channel and the residual base;
  training takes its damage from the draws): the preset as shipped.

Both train on the store's fixed-dose scans (``simulate.counts_range`` is the preset's later
addition, a requirement of the training distribution, not a choice made here).

Each is scored (damaged-bin NRMSE against the validation draws' noiseless truth) before
training -- a zero-initialised residual network returns its base exactly, so that row is the
prior alone: normconv, or the model-based fill -- and at the checkpoint the product keeps
(``checkpoint_best.pt``, chosen without the truth). Writes bench/results/fill_prior.json;
docs/training.md quotes it.
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
sys.path.insert(0, str(ROOT / "bench"))

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "normconv": ("the network corrects the normconv prior (the preset before the fill)",
                 ["model.fill_prior=false"]),
    "fill": ("+ the model-based fill as a channel and the residual base (the preset)",
             ["model.fill_prior=true"]),
}
TINY = ["train.epochs=1", "data.epoch_size=16", "data.batch_size=8", "train.val_batches=1"]


def phantoms_mu(work: Path, store) -> dict:
    """Attenuation map per store scan id: the simulated phantoms drawn again (same seeds)."""
    from badblock.config import load_config
    from badblock.demo import scan_headers
    from badblock.io.naming import scan_id
    from badblock.physics import get_scanner
    from badblock.physics.projector import scanner_geometry
    from badblock.physics.simulate import SIMULATION_JSON, make_sources

    sim = work / "sim"
    cfg = load_config("demo", [f"run.output={work}"], env={})
    record = json.loads((sim / SIMULATION_JSON).read_text())
    n = len(record["scans"])
    cfg.simulate.scans, cfg.simulate.seed = n, cfg.run.seed
    geom = scanner_geometry(get_scanner(cfg.scanner.name), tof_fwhm_ps=cfg.simulate.tof_fwhm_ps)
    out = {}
    for path, source, rec in zip(scan_headers(sim), make_sources(cfg, geom, n), record["scans"]):
        if json.loads(json.dumps(source.params)) != rec["phantom"]:
            raise RuntimeError(f"{path}: the phantom drawn again is not the one simulated")
        out[scan_id(path)] = source.mu
    missing = [s.id for s in store.scans if s.id not in out]
    if missing:
        raise RuntimeError(f"no phantom for store scans {missing[:3]}")
    return out


def make_fill_folder(work: Path, store_path: Path, draws: int, tiny: bool) -> Path:
    """The fill folder of the store (reused when complete)."""
    from badblock.baselines import fill_settings
    from badblock.config import load_config
    from badblock.data.blockmasks import BlockSampler
    from badblock.data.build import scanner_for, validation_mask
    from badblock.data.dataset import all_blocks
    from badblock.data.fills import MANIFEST, make_fills
    from badblock.data.store import Store

    folder = work / f"fills-{draws}"
    if (folder / MANIFEST).exists():
        return folder
    cfg = load_config("demo", [f"run.output={work}"], env={})
    store = Store.open(store_path)
    scanner = scanner_for(store, cfg.scanner.name)
    sampler = BlockSampler(scanner, all_blocks(scanner), cfg.data.blocks_per_sample,
                           cfg.data.adjacent)
    settings = fill_settings(1, 2, {"subviews": "mean", "tilts": "plane", "step_mm": 13.0}) \
        if tiny else fill_settings(2, 6, {"subviews": "mean", "tilts": "plane"})
    t0 = time.perf_counter()
    make_fills(store, folder, scanner, sampler, draws=draws, seed=cfg.run.seed + 31,
               val_mask=validation_mask(cfg.scanner, store, scanner, cfg.run.data),
               settings=settings, mus=phantoms_mu(work, store),
               progress=lambda msg: print(f"[fill_prior] {msg}", flush=True))
    print(f"[fill_prior] fills made in {time.perf_counter() - t0:.0f} s")
    return folder


def prior_score(cfg) -> dict:
    """Validation of the untrained (zero-initialised residual) network: its base alone."""
    from badblock.train.loop import Trainer

    trainer = Trainer(cfg)
    trainer.build()
    return trainer.validate()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(VARIANTS), help="variants to run")
    ap.add_argument("--draws", type=int, default=4, help="damage draws per training scan")
    ap.add_argument("--work", help="work folder (default badblock-output/fill-prior; with "
                                   "--tiny a fresh temporary one)")
    ap.add_argument("--out", help="result JSON (default bench/results/fill_prior.json)")
    ap.add_argument("--tiny", action="store_true", help="a few steps per variant")
    ap.add_argument("--threads", type=int, default=2, help="run.threads of each training")
    args = ap.parse_args(argv)
    os.environ.setdefault("BADBLOCK_PROGRESS", "0")
    from benchtools import work_folder
    from preset_sweep import make_store, score

    from badblock.config import load_config
    from badblock.errors import BadInputError
    from badblock.train.loop import train
    from badblock.utils.atomic import atomic_write_json

    if args.tiny and not args.out:
        ap.error("--tiny needs --out (a tiny run never replaces the measured result)")
    work = work_folder(args, "fill-prior")
    out = Path(args.out or ROOT / "bench" / "results" / "fill_prior.json")
    try:
        store = make_store(work, args.tiny)
        t0 = time.perf_counter()
        fills = make_fill_folder(work, store, 1 if args.tiny else args.draws, args.tiny)
        fill_s = round(time.perf_counter() - t0, 1)
        results = {}
        for name in args.only or list(VARIANTS):
            what, sets = VARIANTS[name]
            base = [f"run.output={work}", f"data.store={store}", f"data.fills={fills}",
                    f"train.run={name}", f"run.threads={args.threads}",
                    "train.tensorboard=false"]
            cfg = load_config("demo", base + sets + (TINY if args.tiny else []), env={})
            prior = prior_score(cfg)
            t1 = time.perf_counter()
            folder = Path(train(cfg))  # a finished run is kept as it is (rerun = reuse)
            results[name] = {"what": what, "sets": sets,
                             "val_truth_nrmse_prior": prior.get("nrmse_net_truth"),
                             "val_estimate_prior": prior["nrmse_net"], **score(folder),
                             "train_s": round(time.perf_counter() - t1, 1)}
            r = results[name]
            print(f"[fill_prior] {name:9s} validation truth NRMSE: prior alone "
                  f"{r['val_truth_nrmse_prior']:.4f}, kept checkpoint "
                  f"{r['val_truth_nrmse_kept']:.4f} (epoch {r['best_epoch']}/{r['epochs']})")
    except BadInputError as exc:
        print(f"fill_prior: error: {exc.message}", file=sys.stderr)
        return 2
    command = "python bench/fill_prior.py" + (" --tiny" if args.tiny else "") + (
        f" --draws {args.draws}" if args.draws != 4 else "") + (
        " --only " + " ".join(args.only) if args.only else "")
    atomic_write_json(out, {"command": command, "threads": args.threads,
                            "draws": 1 if args.tiny else args.draws, "fill_s": fill_s,
                            "variants": results})
    print(f"fill_prior: {len(results)} variant(s) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
