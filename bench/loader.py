"""Input pipeline throughput: badblock's loader vs. the 2019 tutorial's, vs. the training step.

Measures, on one store (a synthetic Vision-sized store built here unless ``--store`` is given):

- ``tutorial``: the tutorial's way (section 2.2): the whole padded arrays pickled and loaded
  into memory, then per sample a corrupted 5-plane stack + target put through an Augmentor
  ``DataPipeline`` (rotate p=0.7 +-10 deg -- ``rotate_without_crop``, as ``rotate`` fails on
  64 x 520 planes -- and zoom p=0.5 x1.1-1.5, as in the tutorial) and normalised by the stack
  maximum. Timed per sample, without batching (generous to it: no collation counted);
- ``badblock``: the training DataLoader exactly as the trainer builds it
  (:func:`badblock.data.build.train_loader`: whole batches fetched by
  ``PlaneDataset.__getitems__``, memory maps, context stacks with the flipped-wrap view
  padding, per-block masks), with the trainer's thread setting (``run.threads``, 0 = torch's
  default), then the rest of the host's work on the CPU (:func:`badblock.train.batch
  .prepare_batch`: thinning, sinogram augmentation, normalisation) -- once with thinning on the
  "device" (torch, in batches; what ``data.thin_on: auto`` does) and once in the loader (numpy,
  per sample). On a GPU machine everything after the loader runs on the GPU;
- ``step``: training steps of the default UNet (``ModelConfig()`` defaults: width 64, depth 2,
  5 bottom convs) on batches of the same shape.

The pipelines are measured round-robin (``--rounds``) and each reported by its median, so a
load change on a shared machine does not favour whichever ran first. ``breakdown_ms_per_batch``
says where the CPU pipeline's time goes. Writes ``bench/results/loader.json``. Example (what
docs/benchmarks.md quotes)::

    python bench/loader.py --seconds 4 --rounds 3
    python bench/loader.py --tiny --out FILE       # CI: the mini scanner, seconds
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchtools import results_path  # noqa: E402

from badblock.config import load_config  # noqa: E402
from badblock.data.store import Store  # noqa: E402
from badblock.data.store_writer import write_store  # noqa: E402
from badblock.physics.mask import dead_block_mask  # noqa: E402
from badblock.physics.scanners import get_scanner  # noqa: E402


def synthetic_store(folder: Path, n_scans: int, scanner: str = "mini", seed: int = 0) -> Path:
    """Poisson counts of a few smooth blobs in the scanner's planes. One TOF bin only, so a
    Vision-sized store (815 planes x 50 views x 520 bins) stays at 42 MB per scan."""
    sc = get_scanner(scanner)
    rng = np.random.default_rng(seed)
    _, n_planes, n_views, n_bins = sc.shape
    n_tof = 1
    theta = np.pi * np.arange(n_views) / n_views
    s = np.linspace(-1, 1, n_bins)
    scans = {}
    for i in range(n_scans):
        lam = np.zeros((n_tof, n_planes, n_views, n_bins), np.float32)
        for _ in range(4):
            x0, y0 = rng.uniform(-0.4, 0.4, 2)
            prof = np.exp(-0.5 * ((s[None] - x0 * np.cos(theta)[:, None]
                                   - y0 * np.sin(theta)[:, None]) / rng.uniform(0.08, 0.2)) ** 2)
            lam += (30 * prof)[None, None].astype(np.float32)
        scans[f"scan_{i:03d}"] = rng.poisson(lam).astype(np.uint16)
    return write_store(folder / "store", scans, val=[f"scan_{n_scans - 1:03d}"],
                       segments=sc.segments, tof_order="none", scanner=scanner)


def rate(fn, seconds: float, unit: int) -> float:
    """Items per second of ``fn`` (each call yields ``unit`` items), after one warm-up call."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += unit
    return n / (time.perf_counter() - t0)


def tutorial_pipeline(store: Store, tmp: Path, mask: np.ndarray, views_to: int, seed: int = 0):
    """The tutorial's loader: whole arrays from pickle, Augmentor per sample. Returns
    (sample function, seconds to load the pickles, bytes held in memory)."""
    import Augmentor

    paths = []
    for scan in store.split("train"):
        # the tutorial's process_data: whole scan, view axis padded with a plain wrap, pickled
        pad = (views_to - scan.shape[2]) // 2
        arr = np.pad(np.asarray(scan.data), ((0, 0), (0, 0), (pad, pad), (0, 0)), "wrap")
        path = tmp / f"{scan.id}.pkl"
        with open(path, "wb") as fh:
            pickle.dump(arr, fh, pickle.HIGHEST_PROTOCOL)
        paths.append(path)
    t0 = time.perf_counter()
    arrays = []
    for path in paths:
        with open(path, "rb") as fh:
            arrays.append(pickle.load(fh))
    load_s = time.perf_counter() - t0
    held = sum(a.nbytes for a in arrays)
    mpad = np.pad(mask, ((0, 0), ((views_to - mask.shape[1]) // 2,) * 2, (0, 0)), "wrap")
    rng = np.random.default_rng(seed)

    def sample():
        a = arrays[rng.integers(len(arrays))]
        t = rng.integers(a.shape[0])
        p = rng.integers(2, a.shape[1] - 2)
        orig = a[t, p - 2:p + 3].astype(np.float32)
        corrupt = orig * (1.0 - mpad[p - 2:p + 3])  # the tutorial multiplies by the mask
        images = [[c for c in corrupt] + [orig[2]]]
        pipe = Augmentor.DataPipeline(images)
        # the tutorial's rotate() fails on 64 x 520 planes (Augmentor 0.2.12 crops to nothing)
        pipe.rotate_without_crop(probability=0.7, max_left_rotation=10, max_right_rotation=10)
        pipe.zoom(probability=0.5, min_factor=1.1, max_factor=1.5)
        out = pipe.sample(1)[0]
        x = np.stack(out[:5])
        y = np.stack(out[5:6])
        scale = x.max() + 1e-8
        return x / scale, y / scale

    return sample, load_s, held


class OneByOne(torch.utils.data.Dataset):
    """The dataset seen through ``__getitem__`` only (no whole-batch fetch)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


def per_call_ms(fn, seconds: float) -> float:
    """Milliseconds per call of ``fn`` (after one warm-up call)."""
    return 1e3 * rate(fn, seconds, 1) ** -1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", help="an existing store (default: build a synthetic one)")
    ap.add_argument("--scale", type=int, default=2, help="training scans in the synthetic store")
    ap.add_argument("--scanner", default="vision", help="plane geometry of the synthetic store")
    ap.add_argument("--seconds", type=float, default=4.0, help="time per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="round-robin rounds (median kept)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=0, help="data.workers")
    ap.add_argument("--threads", type=int, default=0,
                    help="run.threads: torch intra-op threads (0 = torch's default, as the "
                         "trainer)")
    ap.add_argument("--tiny", action="store_true",
                    help="CI: mini scanner, one round of 0.2 s per measurement, batch 4, "
                         "a width-4 network")
    ap.add_argument("--out", default=None,
                    help="results JSON (default bench/results/loader.json)")
    args = ap.parse_args(argv)
    out = results_path(ap, args, "loader.json")
    if args.tiny:
        args.scanner, args.seconds, args.rounds, args.batch, args.scale = "mini", 0.2, 1, 4, 1
    from badblock.data.augment import augment_batch
    from badblock.data.build import build_data, train_loader
    from badblock.data.corruption import thin
    from badblock.data.dataset import EpochSampler
    from badblock.inference.layout import ChannelLayout
    from badblock.physics.stack import view_padding
    from badblock.train.batch import prepare_batch

    tmp = Path(tempfile.mkdtemp(prefix="bb-loader-"))
    store_path = Path(args.store) if args.store else synthetic_store(tmp, args.scale + 1,
                                                                         args.scanner)
    store = Store.open(store_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def cfg_for(thin_on: str):
        sets = [f"run.output={store_path.parent}", f"data.store={store_path}",
                f"data.batch_size={args.batch}", f"data.workers={args.workers}",
                f"data.thin_on={thin_on}", "data.epoch_size=1000000",
                f"scanner.name={store.scanner}", f"run.threads={args.threads}"]
        if args.tiny:
            sets.append("model.width=4")
        return load_config(None, sets, env={})

    cfg = cfg_for("device")
    if cfg.run.threads > 0:  # what Trainer.__init__ does
        torch.set_num_threads(cfg.run.threads)
    results = {"command": "python bench/loader.py " + " ".join(sys.argv[1:] if argv is None
                                                              else argv),
               "machine": f"{platform.processor() or platform.machine()}, "
                          f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
                          f"device {device}",
               "load_average_before": list(os.getloadavg()),
               "store": str(store_path), "shape": list(store.shape), "batch": args.batch,
               "workers": args.workers}

    pipelines = {}  # name -> (function, items per call)
    for thin_on in ("device", "loader"):
        cfg = cfg_for(thin_on)
        train_ds, _, info = build_data(cfg, 2 ** cfg.model.depth)
        loader = train_loader(train_ds, EpochSampler(cfg.data.epoch_size, args.batch),
                              args.batch, args.workers, device)
        it = iter(loader)
        before, _ = view_padding(info["views"], info["views_to"])
        crop = (before, before + info["views"])
        gen = torch.Generator(device=device).manual_seed(0)

        def one_batch(it=it, cfg=cfg, crop=crop, gen=gen):
            prepare_batch(next(it), ChannelLayout.of(cfg.data, cfg.model), cfg.data.task,
                          cfg.data.target, cfg.augment, device, gen, crop, augment=True)
            if device.type == "cuda":
                torch.cuda.synchronize()

        pipelines[f"badblock_loader_thin_{thin_on}"] = (lambda it=it: next(it), args.batch)
        if thin_on == "device":
            # the previous way, for comparison: one sample at a time, stacked by default_collate
            old = iter(torch.utils.data.DataLoader(
                OneByOne(train_ds), batch_size=args.batch, num_workers=args.workers,
                sampler=EpochSampler(cfg.data.epoch_size, args.batch)))
            pipelines["per_sample_default_collate"] = (lambda old=old: next(old), args.batch)
        pipelines[f"badblock_full_thin_{thin_on}"] = (one_batch, args.batch)
        if thin_on == "device":
            raw, dev_cfg, dev_crop = next(it), cfg, crop

    mask = dead_block_mask(get_scanner(store.scanner), [(3, 1)])
    sample, load_s, held = tutorial_pipeline(store, tmp, mask, info["views_to"])
    results["tutorial_pickle_load_s"] = load_s
    results["tutorial_bytes_in_memory"] = held
    pipelines["tutorial"] = (sample, 1)

    from badblock.models import build_model
    from badblock.train.losses import build_loss

    model = build_model(cfg.model, 5).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    loss_fn = build_loss(cfg.loss)
    x = torch.rand(args.batch, 5, info["views_to"], store.shape[3], device=device)
    y = torch.rand(args.batch, 1, info["views_to"], store.shape[3], device=device)
    amp = device.type == "cuda"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(x)
        loss_fn(pred.float(), y).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    pipelines["train_step"] = (step, args.batch)

    runs = {name: [] for name in pipelines}
    for r in range(args.rounds):
        for name, (fn, unit) in pipelines.items():
            if name == "train_step" and r > 0 and device.type == "cpu":
                continue  # seconds per step on a CPU: one round says enough
            runs[name].append(rate(fn, args.seconds, unit))
            print(f"round {r + 1}/{args.rounds} {name}: {runs[name][-1]:.1f} samples/s",
                  flush=True)
    for name, values in runs.items():
        results[f"{name}_samples_per_s"] = float(np.median(values))
        results[f"{name}_samples_per_s_all_rounds"] = values

    # where the CPU pipeline's time goes, per batch (one fixed batch, thin_on: device)
    layout = ChannelLayout.of(dev_cfg.data, dev_cfg.model)
    clean = raw["clean"].to(device).float()
    mask_b = raw["mask"].to(device)
    damaged = thin(clean, 1.0 - mask_b, gen)
    target = raw["target"].to(device)

    def aug():
        augment_batch(damaged.clone(), target.clone(), mask_b.clone(), dev_cfg.augment, gen,
                      real_views=dev_crop, target_mode="counts")

    def norm():
        layout.inputs(damaged, mask_b)

    t = max(1.0, args.seconds / 4)
    results["breakdown_ms_per_batch"] = {
        "loader (fetch a batch: stacks, padding, masks)":
            1e3 * args.batch / results["badblock_loader_thin_device_samples_per_s"],
        "counts to float32": per_call_ms(lambda: raw["clean"].to(device).float(), t),
        "thinning (torch.binomial)": per_call_ms(lambda: thin(clean, 1.0 - mask_b, gen), t),
        "augmentation (clones included)": per_call_ms(aug, t),
        "normalisation + network input": per_call_ms(norm, t),
        "training step": 1e3 * args.batch / results["train_step_samples_per_s"],
    }
    tut = results["tutorial_samples_per_s"]
    host = results["badblock_loader_thin_device_samples_per_s"]
    full = max(results["badblock_full_thin_device_samples_per_s"],
               results["badblock_full_thin_loader_samples_per_s"])
    stepr = results["train_step_samples_per_s"]
    results["loader_over_per_sample_default_collate"] = (
        host / results["per_sample_default_collate_samples_per_s"])
    results["loader_over_tutorial"] = host / tut
    results["full_cpu_pipeline_over_tutorial"] = full / tut
    results["full_cpu_pipeline_over_step"] = full / stepr
    results["loader_over_step"] = host / stepr
    results["load_average_after"] = list(os.getloadavg())
    print(f"tutorial {tut:.1f} samples/s; badblock loader {host:.1f} "
          f"({results['loader_over_tutorial']:.1f}x tutorial, target >= 10x); loader + "
          f"thinning + augmentation on {device} {full:.1f} "
          f"({results['full_cpu_pipeline_over_tutorial']:.1f}x tutorial); training step "
          f"{stepr:.2f} samples/s (loader {results['loader_over_step']:.0f}x, full pipeline "
          f"{results['full_cpu_pipeline_over_step']:.0f}x the step, target >= 2x)")
    for what, ms in results["breakdown_ms_per_batch"].items():
        print(f"  {what}: {ms:.1f} ms per batch of {args.batch}")
    out.parent.mkdir(parents=True, exist_ok=True)
    from badblock.utils.atomic import atomic_write_json

    atomic_write_json(out, results)
    print(f"wrote {out}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
