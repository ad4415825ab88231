"""The whole chain on simulated data: simulate -> preprocess -> train -> repair -> evaluate.

Training scans and test scans are different phantoms (different seeds), and the test scans'
dead block sits at a position the network never saw in training, so the report measures how
the method generalises, not how well it remembers. Everything lands under ``run.output``:

    sim/train, sim/test      simulated scans (+ .truth noiseless expectations)
    store/                   the training store
    train/                   checkpoints, loss logs, progress.png (train_truth/ with also_truth)
    test/mask.npy            the test dead-block mask; test/damaged/ the damaged test scans
    test/repaired/           the network's repairs (test/repaired_truth/ with also_truth)
    report/                  metrics.json, report.png, report.md
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

from badblock.config import Config, save_resolved
from badblock.errors import BadInputError
from badblock.utils.atomic import atomic_save_npy, atomic_write_text


def _stage_config(cfg: Config, **changes: dict) -> Config:
    """A copy of ``cfg`` with ``section={key: value}`` changes applied."""
    out = copy.deepcopy(cfg)
    for section, values in changes.items():
        for key, value in values.items():
            setattr(getattr(out, section), key, value)
    return out


def train_blocks(scanner, test_blocks: list[tuple[int, int]]) -> list[str]:
    """Every block position of ``scanner`` except the test ones, as "T:A" strings."""
    held_out = set(test_blocks)
    return [f"{t}:{a}" for a in range(scanner.blocks_axial)
            for t in range(scanner.blocks_transaxial) if (t, a) not in held_out]


def scan_headers(folder: Path) -> list[Path]:
    """The prompt scans of a simulation folder (truth sidecars left out), sorted."""
    from badblock.io.naming import is_sidecar_name

    return sorted(p for p in folder.glob("scan_*.hs") if not is_sidecar_name(p))


def run_demo(cfg: Config, *, force: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run the demo under ``cfg.run.output``; returns the evaluation metrics dict."""
    from badblock.baselines import fill_options, fill_settings_of
    from badblock.data.fills import make_fills_for
    from badblock.data.preprocess import preprocess
    from badblock.evaluate import MADE_FROM_MASK, evaluate_files, format_table, write_damaged
    from badblock.inference import load_predictor
    from badblock.io.naming import scan_id
    from badblock.physics import get_scanner, parse_blocks
    from badblock.physics.mask import resolve_mask
    from badblock.physics.simulate import simulate
    from badblock.repair import repair_files
    from badblock.train.loop import train

    out = Path(cfg.run.output)
    demo = cfg.demo
    if out.exists() and any(out.iterdir()) and not force:
        raise BadInputError(out, "is not empty (the demo writes a fresh tree; use --force or "
                                 "another --output)")
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out)
    scanner = get_scanner(cfg.scanner.name)
    test_blocks = parse_blocks(demo.test_blocks, "demo.test_blocks")
    blocks = train_blocks(scanner, test_blocks)
    t0 = time.perf_counter()
    times: dict[str, float] = {}

    def lap(name: str) -> None:
        times[name] = round(time.perf_counter() - t0 - sum(times.values()), 1)
        log(f"[demo] {name} done in {times[name]:.1f} s")

    log(f"[demo] scanner {scanner.name} {list(scanner.shape)} [TOF, plane, view, bin]; "
        f"{demo.train_scans} training scans, {demo.test_scans} test scans with dead block(s) "
        f"{','.join(demo.test_blocks)} (never used in training: the network trains on the other "
        f"{len(blocks)} positions)")

    sim_train = simulate(_stage_config(cfg, simulate={"scans": demo.train_scans,
                                                      "seed": cfg.run.seed}),
                         out / "sim" / "train", force=force)
    # the test scans at the preset's counts exactly (training spans simulate.counts_range)
    sim_test = simulate(_stage_config(cfg, simulate={"scans": demo.test_scans,
                                                     "seed": cfg.run.seed + 10_000,
                                                     "counts_range": []}),
                        out / "sim" / "test", force=force)
    lap("simulate")

    pcfg = _stage_config(cfg, preprocess={"inputs": [str(p) for p in scan_headers(sim_train)],
                                          "store": "store"})
    store = preprocess(pcfg, force=force)
    lap("preprocess")

    if cfg.model.fill_prior:
        fcfg = _stage_config(cfg, data={"store": "store", "train_blocks": blocks})
        log(f"[demo] model-based fills of {cfg.fills.draws} damage draws per training scan")
        make_fills_for(fcfg, force=force)
        lap("fills")

    runs = {"unet": "train"}
    if demo.also_truth:
        runs["unet (trained on truth)"] = "train_truth"
    checkpoints = {}
    for label, run in runs.items():
        target = "truth" if run == "train_truth" else cfg.data.target
        # the truth has no surviving-count noise to avoid: the network learns it directly
        loss = {"target": "complete"} if target == "truth" else {}
        tcfg = _stage_config(cfg, data={"store": "store", "train_blocks": blocks,
                                        "target": target}, train={"run": run}, loss=loss)
        log(f"[demo] training '{label}' (targets: {target})")
        folder = train(tcfg)
        best = Path(folder) / "checkpoint_best.pt"
        checkpoints[label] = best if best.exists() else Path(folder) / "checkpoint_final.pt"
    lap("train")

    resolved = resolve_mask(cfg.scanner, scanner=scanner.name, dead_blocks=test_blocks,
                            dead_crystals=())
    mask = resolved.mask
    test_dir = out / "test"
    test_dir.mkdir(exist_ok=True)
    atomic_save_npy(test_dir / "mask.npy", mask)
    complete = scan_headers(sim_test)
    damaged = write_damaged(complete, mask, test_dir / "damaged", seed=cfg.evaluate.seed)
    repaired = {}
    for label, ck in checkpoints.items():
        folder = test_dir / ("repaired" if label == "unet" else "repaired_truth")
        predictor = load_predictor(ck, cfg.run.device, cfg.run.threads)
        repair_files(damaged, mask, predictor, folder, batch_size=cfg.repair.batch_size,
                     force=True, mask_check=False, unchecked_why=MADE_FROM_MASK,
                     declared=resolved, self_check=cfg.repair.self_check,
                     log=lambda m: log(f"[repair] {m}"))
        repaired[label] = [folder / p.name for p in damaged]
    lap("repair")

    # normconv's widths are tuned on the store's validation scans, never on the test scans.
    val_ids = set(store.val)
    tune = [p for p in scan_headers(sim_train) if scan_id(p) in val_ids]
    result = evaluate_files(complete, mask, out / "report", damaged=damaged, repaired=repaired,
                            tune=tune, seed=cfg.evaluate.seed,
                            baselines=cfg.evaluate.baselines, widths=cfg.evaluate.widths or None,
                            fbp=cfg.evaluate.fbp, scanner=scanner.name,
                            model_options=fill_options(fill_settings_of(cfg.fills)),
                            extra={"demo": {"train_blocks": blocks,
                                            "test_blocks": demo.test_blocks,
                                            "checkpoints": {k: str(v)
                                                            for k, v in checkpoints.items()}}},
                            log=lambda m: log(f"[evaluate] {m}"))
    lap("evaluate")
    table = format_table(result)
    total = round(time.perf_counter() - t0, 1)
    atomic_write_text(out / "report" / "report.md", _report_markdown(table, times, total, out))
    log(table)
    log(f"[demo] finished in {total:.0f} s; report: {out / 'report' / 'report.png'} "
        f"(metrics: {out / 'report' / 'metrics.json'})")
    result["timings_s"] = times
    return result


def _report_markdown(table: str, times: dict, total: float, out: Path) -> str:
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
    return (f"# badblock demo report\n\nOutput: `{out}`. Time: {total:.0f} s ({steps}).\n\n"
            f"```\n{table}\n```\n\n![report](report.png)\n")
