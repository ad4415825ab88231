"""Benchmark: a full Vision frame repaired by the fast path, next to the plain path and the floors.

One e7 frame ``[33, 815, 50, 520]`` uint16 (1.4 GB: Poisson counts, the ``vision`` preset's
dead block 3:1 thinned out; synthesised in seconds, no simulator) and, per network, a freshly
initialised checkpoint of the right architecture (the speed of a network does not depend on its
weights): ``vision`` is the vision preset's network (width 64), ``demo`` the demo preset's
(width 16) at the Vision's geometry. Each measurement runs in its own process:

- ``floor``: the I/O floor (the frame read with its pages dropped from the cache, written to a
  new file and fsynced: the bytes a repair must move at least) and this CPU's sustained
  float32 rate (a 2048^3 matrix product on one thread, per CPU second: see
  ``bench/benchtools.py``). The compute floor of a network is ``images x FLOPs per image /
  (rate x cores)``: what the CPU's arithmetic allows with nothing else to do;
- ``baseline``: the repair path before this benchmark's changes (float32, NCHW, ``no_grad``,
  torch's default threads and OpenMP wait policy, glibc's default allocator, stacks built one
  by one, everything in one thread), run on the frame's first images for
  ``--baseline-seconds`` and extrapolated to the whole frame (its copy of the untouched
  planes and the publication of the output are measured in full);
- ``fast``: ``badblock.repair.repair_scan`` as ``badblock repair`` runs it, on the whole frame
  (or, with ``--tof K``, every network on a frame of K of the 33 TOF bins, and with
  ``--vision-tof K`` the width-64 network only, its times then scaled by 33 / K -- the JSON
  says so: on a CPU without bf16 units the width-64 network's whole frame takes hours).

Reported per network: wall time, CPU seconds of the process tree and its system share, plane
images per second, peak RSS, peak anonymous memory (the sum of RssAnon over the process and its
workers, sampled every 50 ms: an upper bound, see ``bench/benchtools.py``), the time split of
the fast path (seconds each stage was busy: stacks built from the input, network, merge and
write of predictions, copy of untouched planes, publication), the agreement of fast and
baseline outputs on the images both repaired, and the ratios: fast vs baseline, fast vs floors,
fast vs the targets. Writes ``bench/results/repair.json``.

    python bench/repair.py                         # both networks, the full frame
    python bench/repair.py --vision-tof 3          # width 64 on 3 of the 33 TOF bins, scaled
    python bench/repair.py --tof 1                 # both networks on 1 TOF bin, scaled
    python bench/repair.py --tiny --out FILE       # CI: the mini scanner, seconds

Not a test: absolute times depend on the machine's load (recorded next to every figure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ORIGINAL_OMP = os.environ.get("OMP_WAIT_POLICY")  # before badblock sets its default

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from benchtools import (  # noqa: E402
    MemorySampler,
    cpu_seconds,
    drop_cache,
    load,
    machine,
    peak_rss_mb,
    results_path,
    sgemm_rate,
)

BLOCK = "3:1"
# Issue 13's targets for a full frame: on the 2-core CPU per network, on one H100/H200 30 s.
TARGETS_S = {"cpu": {"vision": 360.0, "demo": 60.0}, "cuda": {"vision": 30.0, "demo": 30.0}}


def make_frame(path: Path, scanner: str, n_tof: int, counts: float, seed: int = 0) -> None:
    """An e7 frame: Poisson(``counts``) planes (a pool of 97, reused shifted), with the bins of
    the dead block thinned by ``1 - f``. Seconds for 1.4 GB."""
    from badblock.io import ScanHeader, open_scan_writer
    from badblock.physics import dead_block_mask, get_scanner

    sc = get_scanner(scanner)
    shape = (n_tof,) + tuple(sc.shape[1:])
    keep = (1.0 - dead_block_mask(sc, BLOCK)).astype(np.float32)
    rng = np.random.default_rng(seed)
    pool = rng.poisson(counts, size=(97,) + shape[2:]).astype(np.float32)
    header = ScanHeader(format="e7", shape=shape, dtype=np.dtype("<u2"),
                        data_file=path.with_suffix(""), segments=sc.segments,
                        tof_order="siemens" if n_tof > 1 else "none", scanner=scanner)
    with open_scan_writer(path, header) as w:
        for t in range(n_tof):
            idx = (np.arange(shape[1]) * 7 + t * 13) % len(pool)
            w.data[t] = np.rint(pool[idx] * keep).astype(np.uint16)


def make_checkpoint(path: Path, preset: str, scanner: str, width: int | None) -> dict:
    """A freshly initialised checkpoint of ``preset``'s network at ``scanner``'s geometry (the
    data dict training would write); returns its description and FLOPs per plane image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from badblock.config import load_config
    from badblock.physics import get_scanner
    from badblock.physics.stack import padded_views
    from badblock.train.setup import build_network, layout_for
    from badblock.utils.checkpoint import save_checkpoint

    # without the model-based fill channel: one input channel more changes the network's cost
    # by under 1 %, and the fill's own cost (one OSEM of the whole scan) is not this benchmark's
    cfg = load_config(preset, ([f"model.width={width}"] if width else [])
                      + ["model.fill_prior=false", "data.fills="], env={})
    layout = layout_for(cfg)
    sc = get_scanner(scanner)
    views = sc.shape[2]
    views_to = cfg.data.views_to or padded_views(views, 2 ** cfg.model.depth)
    torch.manual_seed(0)
    model = build_network(cfg, layout, torch.device("cpu"))
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(1, layout.in_channels, views_to, sc.shape[3]))
    d = cfg.data
    save_checkpoint(path, {
        "model": model.state_dict(), "model_config": dict(model.config),
        "data": {**layout.to_dict(), "multiple": 2 ** cfg.model.depth,
                 "views_to": views_to, "views": views, "bins": sc.shape[3], "task": d.task,
                 "target": d.target, "scanner": scanner},
        "epoch": 0, "step": 0})
    return {"preset": preset, "width": model.config["width"], "describe": model.describe(),
            "layout": layout.to_dict(), "gflop_per_image": counter.get_total_flops() / 1e9}


class LegacyPredictor:
    """The predictor as it was: float32, NCHW, ``torch.no_grad``, one call per batch (the
    same input layout, :meth:`badblock.inference.ChannelLayout.inputs`)."""

    def __init__(self, path: str):
        import torch

        from badblock.inference import Predictor

        p = Predictor.from_checkpoint(path, "cpu", amp=False)
        self.model = p.model.to(memory_format=torch.contiguous_format)
        for k in ("layout", "context", "margin", "per_lor", "mask_channel", "multiple",
                  "views_to", "data"):
            setattr(self, k, getattr(p, k))

    def __call__(self, stacks, masks, sens=None):
        import torch

        def tensor(a):
            return None if a is None else torch.as_tensor(np.asarray(a, np.float32))

        with torch.no_grad():
            x, _, out_scale = self.layout.inputs(tensor(stacks), tensor(masks), tensor(sens))
            return (self.model(x).float() * out_scale)[:, 0].numpy()


def legacy_repair(scan, mask, predictor, out_path: Path, batch_size: int, seconds: float) -> dict:
    """The repair loop as it was (copy every plane, then per batch: stacks one by one,
    predictor, merge plane by plane), stopped after ``seconds`` of network batches."""
    from badblock.io import open_scan_writer
    from badblock.physics.stack import mask_stack, padded_views, plane_stack, view_padding
    from badblock.repair import _sensitivity

    h = scan.header
    n_tof, n_planes, n_views, n_bins = h.shape
    views_to = predictor.views_to or padded_views(n_views, predictor.multiple)
    wide = views_to + 2 * predictor.margin
    sens = _sensitivity(predictor, h.shape) if predictor.per_lor else None
    before, _ = view_padding(n_views, views_to)
    planes = np.flatnonzero((mask > 0).any(axis=(1, 2)))
    items = [(t, int(p)) for t in range(n_tof) for p in planes]
    tof_order = h.tof_order if n_tof > 1 else "none"
    t0 = time.perf_counter()
    with open_scan_writer(out_path, h) as writer:
        step = max(1, (64 << 20) // (n_views * n_bins * 2))
        for t in range(n_tof):
            for p0 in range(0, n_planes, step):
                writer.data[t, p0:p0 + step] = scan.data[t, p0:p0 + step]
        copy_s = time.perf_counter() - t0
        t1, done = time.perf_counter(), 0
        while done < len(items) and time.perf_counter() - t1 < seconds:
            batch = items[done:done + batch_size]
            stacks = np.stack([plane_stack(scan.data, t, p, predictor.context, h.segments,
                                           tof_order, wide) for t, p in batch])
            masks = np.stack([mask_stack(mask, p, predictor.context, h.segments, wide)
                              for _, p in batch]) if predictor.mask_channel else None
            senses = None if sens is None else np.stack([plane_stack(
                sens, 0, p, predictor.context, h.segments, "none", wide) for _, p in batch])
            pred = predictor(stacks, masks, senses)[:, before:before + n_views]
            for i, (t, p) in enumerate(batch):
                original = np.asarray(scan.data[t, p])
                value = np.clip(np.rint(pred[i]), 0, 65535)
                writer.data[t, p] = np.where(mask[p] > 0, value, original).astype(h.dtype)
            done += len(batch)
        loop_s = time.perf_counter() - t1
        t2 = time.perf_counter()
    publish_s = time.perf_counter() - t2
    return {"copy_s": copy_s, "loop_s": loop_s, "publish_s": publish_s, "images": done,
            "images_total": len(items), "items": items[:done]}


def run_floor(args) -> dict:
    """The I/O floor on the frame and the CPU's float32 rate."""
    scan = Path(args.scan)
    data = scan.with_suffix("")
    drop_cache(data)
    copy = Path(args.out_scan)
    t0 = time.perf_counter()
    with open(data, "rb") as src, open(copy, "wb") as dst:
        while chunk := src.read(64 << 20):
            dst.write(chunk)
        read_write_s = time.perf_counter() - t0
        dst.flush()
        os.fsync(dst.fileno())
    total = time.perf_counter() - t0
    size = data.stat().st_size
    copy.unlink()
    rate = sgemm_rate(512, 0.5) if args.scanner == "mini" else sgemm_rate()
    return {"bytes": size, "read_write_s": round(read_write_s, 2), "io_floor_s": round(total, 2),
            "gb_per_s": round(2 * size / total / 1e9, 2), "sgemm": rate,
            "load_avg": load()}


def run_baseline(args) -> dict:
    from badblock.io import read_scan
    from badblock.physics import dead_block_mask, get_scanner

    scan = read_scan(args.scan)
    mask = dead_block_mask(get_scanner(args.scanner), BLOCK)
    drop_cache(scan.header.data_file)
    u0, s0 = cpu_seconds()
    with MemorySampler() as mem:
        r = legacy_repair(scan, mask, LegacyPredictor(args.checkpoint), Path(args.out_scan),
                          args.batch_size, args.baseline_seconds)
    u1, s1 = cpu_seconds()
    np.save(Path(args.out_scan).with_suffix(".items.npy"), np.array(r.pop("items")))
    per_image = r["loop_s"] / max(r["images"], 1)
    r.update(per_image_s=per_image,
             seconds=r["copy_s"] + r["publish_s"] + per_image * r["images_total"],
             cpu_s_measured=u1 - u0 + s1 - s0, system_share=(s1 - s0) / max(u1 - u0 + s1 - s0,
                                                                             1e-9),
             peak_anon_mb=mem.peak_anon_mb, peak_rss_mb=peak_rss_mb(), load_avg=load(),
             threads=__import__("torch").get_num_threads())
    return r


def run_fast(args) -> dict:
    from badblock.inference import load_predictor
    from badblock.io import read_scan
    from badblock.physics import dead_block_mask, get_scanner
    from badblock.repair import repair_scan

    scan = read_scan(args.scan)
    mask = dead_block_mask(get_scanner(args.scanner), BLOCK)
    predictor = load_predictor(args.checkpoint, args.device)
    drop_cache(scan.header.data_file)
    u0, s0 = cpu_seconds()
    with MemorySampler() as mem:
        summary = repair_scan(scan, mask, predictor, args.out_scan,
                              batch_size=args.batch_size, workers=args.workers or None)
    u1, s1 = cpu_seconds()
    if predictor.device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    return {"summary": summary, "seconds": summary["seconds"], "cpu_s": u1 - u0 + s1 - s0,
            "system_share": (s1 - s0) / max(u1 - u0 + s1 - s0, 1e-9),
            "peak_anon_mb": mem.peak_anon_mb, "peak_rss_anon_mb": mem.peak_rss_anon_mb,
            "peak_rss_mb": peak_rss_mb(), "load_avg": load(),
            "channels_last": predictor.channels_last, "device": str(predictor.device)}


def child(mode: str, args, extra: list[str], env: dict) -> dict:
    cmd = [sys.executable, __file__, "--run", mode, "--scanner", args.scanner,
           "--batch-size", str(args.batch_size), "--workers", str(args.workers),
           "--device", args.device,
           "--baseline-seconds", str(args.baseline_seconds), *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"bench/repair.py --run {mode} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def compare(fast_out: Path, base_out: Path, items: np.ndarray, scan_path: Path, mask) -> dict:
    """Fast vs baseline on the images both repaired (bins with f > 0), and the fast output's
    bins with f = 0 against the input over the whole frame."""
    from badblock.io import read_scan

    fast, base, inp = (np.asarray(read_scan(p).data) for p in (fast_out, base_out, scan_path))
    diffs = []
    for t, p in items:
        d = mask[p] > 0
        diffs.append(fast[t, p][d].astype(np.int64) - base[t, p][d])
    diff = np.concatenate(diffs) if diffs else np.zeros(0, np.int64)
    keep = np.broadcast_to(mask == 0, inp.shape[1:])
    same = all(np.array_equal(fast[t][keep], inp[t][keep]) for t in range(inp.shape[0]))
    return {"images_compared": len(items), "bins_compared": int(diff.size),
            "bins_differing": int((diff != 0).sum()),
            "max_abs_diff_counts": int(np.abs(diff).max()) if diff.size else 0,
            "f0_bins_identical_to_input": bool(same)}


def summarise(name: str, net: dict, base: dict | None, fast: dict, floor: dict, cmp: dict | None,
              scale: float, cores: int) -> dict:
    s = fast["summary"]
    target = TARGETS_S.get(fast["device"].split(":")[0], {}).get(name)
    images = s["plane_images_predicted"] + s["plane_images_empty"]
    full_images = images * scale
    fast_s = fast["seconds"] * scale
    base_s = base["seconds"] * scale if base else None
    rate = floor["sgemm"]["gflop_per_cpu_s"]
    compute_floor = full_images * net["gflop_per_image"] / (rate * cores)
    io_floor = floor["io_floor_s"]
    out = {
        "network": net, "images": images, "scaled_by": scale, "full_frame_images": full_images,
        "baseline": {k: base[k] for k in ("seconds", "per_image_s", "copy_s", "publish_s",
                                          "images", "system_share", "peak_anon_mb",
                                          "peak_rss_mb", "threads", "load_avg")} if base else None,
        "fast": {"seconds": fast["seconds"], "cpu_s": fast["cpu_s"],
                 "system_share": fast["system_share"], "peak_anon_mb": fast["peak_anon_mb"],
                 "peak_rss_anon_mb": fast["peak_rss_anon_mb"], "peak_rss_mb": fast["peak_rss_mb"],
                 "plane_images_per_s": images / fast["seconds"],
                 "gflop_per_cpu_s": images * net["gflop_per_image"] / fast["cpu_s"],
                 "split_s": {"stack (read)": s["busy_stack_s"], "network": s["busy_network_s"],
                             "merge (write)": s["busy_merge_s"],
                             "copy untouched": s["busy_copy_s"], "publish": s["publish_s"]},
                 "workers": s["workers"], "network_batch": s["network_batch"],
                 "bf16": s["bf16"], "channels_last": fast["channels_last"],
                 "device": fast["device"], "load_avg": fast["load_avg"]},
        "full_frame_s": {"fast": fast_s, "baseline": base_s, "cpu_compute_floor": compute_floor,
                         "io_floor": io_floor, "target": target},
        "ratios": {"baseline_over_fast": base_s / fast_s if base else None,
                   "fast_over_cpu_compute_floor": fast_s / compute_floor,
                   # a tiny frame reads and writes in under 10 ms: no floor to compare with
                   "fast_over_io_floor": fast_s / io_floor if io_floor > 0 else None,
                   "fast_over_target": fast_s / target if target else None,
                   "cpu_compute_floor_over_target": compute_floor / target if target else None},
        "agreement_with_baseline": cmp,
    }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default="vision,demo", help="presets whose networks run")
    ap.add_argument("--tof", type=int, default=0,
                    help="TOF bins of every network's frame (0: all 33; odd)")
    ap.add_argument("--vision-tof", type=int, default=0,
                    help="TOF bins of the width-64 network's frame (0: as --tof; odd)")
    ap.add_argument("--counts", type=float, default=4.0, help="mean counts per bin")
    ap.add_argument("--baseline-seconds", type=float, default=60.0,
                    help="network time the baseline runs before extrapolating")
    ap.add_argument("--batch-size", type=int, default=32, help="repair.batch_size")
    ap.add_argument("--workers", type=int, default=0, help="repair workers (0: automatic)")
    ap.add_argument("--device", default="cpu", help="the fast path's device (cpu, cuda)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="leave out the baseline (on a GPU, hours of CPU for a known figure)")
    ap.add_argument("--tiny", action="store_true", help="mini scanner, narrow networks (CI)")
    ap.add_argument("--tmp", default=None, help="folder for the frames (default: system temp)")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/repair.json)")
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--scanner", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--scan", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    ap.add_argument("--out-scan", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        fn = {"floor": run_floor, "baseline": run_baseline, "fast": run_fast}[args.run]
        print(json.dumps(fn(args)))
        return 0
    out = results_path(ap, args, "repair.json")

    from badblock.physics import dead_block_mask, get_scanner
    from badblock.utils.atomic import atomic_write_json
    from badblock.utils.hardware import usable_cores

    args.scanner = "mini" if args.tiny else "vision"
    if args.tiny:
        args.baseline_seconds = min(args.baseline_seconds, 2.0)
    sc = get_scanner(args.scanner)
    mask = dead_block_mask(sc, BLOCK)
    full_tof = sc.shape[0]
    env = dict(os.environ, BADBLOCK_PROGRESS="0")
    base_env = {k: v for k, v in env.items() if k != "OMP_WAIT_POLICY"}
    if ORIGINAL_OMP is not None:
        base_env["OMP_WAIT_POLICY"] = ORIGINAL_OMP
    cores = usable_cores()
    result = {"command": "python bench/repair.py " + " ".join(sys.argv[1:]),
              "machine": machine(), "dead_block": BLOCK, "counts_per_bin": args.counts,
              "networks": {}}
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench-repair-") as tmp:
        tmp = Path(tmp)
        frames: dict[int, Path] = {}

        def frame(n_tof: int) -> Path:
            if n_tof not in frames:
                t0 = time.perf_counter()
                frames[n_tof] = tmp / f"frame{n_tof}.s.hdr"
                make_frame(frames[n_tof], args.scanner, n_tof, args.counts)
                print(f"frame [{n_tof}, {', '.join(map(str, sc.shape[1:]))}] uint16 written in "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
            return frames[n_tof]

        full = frame(full_tof)
        floor = child("floor", args, ["--scan", str(full), "--out-scan", str(tmp / "copy")], env)
        result["frame"] = {"shape": [full_tof] + list(sc.shape[1:]), "bytes": floor["bytes"]}
        result["floor"] = floor
        print(f"I/O floor {floor['io_floor_s']} s ({floor['gb_per_s']} GB/s read + write); "
              f"float32 {floor['sgemm']['gflop_per_cpu_s']} GFLOP per CPU second on one core; "
              f"load {floor['load_avg']}", flush=True)
        for name in args.networks.split(","):
            n_tof = (args.vision_tof if name == "vision" and args.vision_tof
                     else args.tof or full_tof)
            scan = frame(n_tof)
            ck = tmp / f"{name}.pt"
            net = make_checkpoint(ck, name, args.scanner, (8 if name == "vision" else 4)
                                  if args.tiny else None)
            paths = {m: tmp / f"out_{name}_{m}.s.hdr" for m in ("baseline", "fast")}
            common = ["--scan", str(scan), "--checkpoint", str(ck)]
            base = None if args.no_baseline else child(
                "baseline", args, common + ["--out-scan", str(paths["baseline"])], base_env)
            fast = child("fast", args, common + ["--out-scan", str(paths["fast"])], env)
            cmp = None
            if base:
                items = np.load(paths["baseline"].with_suffix(".items.npy"))
                cmp = compare(paths["fast"], paths["baseline"], items, scan, mask)
            row = summarise(name, net, base, fast, floor, cmp, full_tof / n_tof, cores)
            result["networks"][name] = row
            for p in tmp.glob(f"out_{name}_*"):
                p.unlink()
            f, r = row["full_frame_s"], row["ratios"]
            vs = (f"baseline {f['baseline']:.0f} s ({r['baseline_over_fast']:.2f}x)" if base
                  else "no baseline")
            agree = (f"{cmp['bins_differing']} of {cmp['bins_compared']} compared bins differ "
                     f"(max {cmp['max_abs_diff_counts']})" if cmp else "")
            print(f"{name} (width {net['width']}, {net['gflop_per_image']:.1f} GFLOP/image, "
                  f"{row['full_frame_images']:.0f} images{' scaled' if n_tof != full_tof else ''}"
                  f"): fast {f['fast']:.0f} s on {row['fast']['device']}, {vs}; CPU compute floor "
                  f"{f['cpu_compute_floor']:.0f} s "
                  f"(fast/floor {r['fast_over_cpu_compute_floor']:.2f}), I/O floor "
                  f"{f['io_floor']:.1f} s; target {f['target']} s (fast/target "
                  f"{r['fast_over_target']:.2f}, floor/target "
                  f"{r['cpu_compute_floor_over_target']:.2f}); peak anon "
                  f"{row['fast']['peak_anon_mb']:.0f} MB; split "
                  f"{json.dumps({k: round(v, 1) for k, v in row['fast']['split_s'].items()})}; "
                  f"{agree}; load {row['fast']['load_avg']}",
                  flush=True)
    result["machine"]["load_avg_end"] = load()
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
