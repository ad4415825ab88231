"""Input pipeline throughput: badblock's loader vs. the 2019 tutorial's, vs. the training step.

Measures, on one store (a synthetic ``mini`` store built here unless ``--store`` is given):

- ``tutorial``: the tutorial's way (section 2.2): the whole padded arrays pickled and loaded
  into memory, then per sample a corrupted 5-plane stack + target put through an Augmentor
  ``DataPipeline`` (rotate p=0.7 +-10 deg -- ``rotate_without_crop``, as ``rotate`` fails on
  64 x 520 planes -- and zoom p=0.5 x1.1-1.5, as in the tutorial) and
  normalised by the stack maximum;
- ``badblock``: :class:`badblock.data.dataset.PlaneDataset` (memory maps, context stacks with
  the flipped-wrap view padding, per-block masks) through a DataLoader, plus the on-device part
  (:func:`badblock.train.loop.prepare_batch`: thinning, sinogram augmentation, normalisation),
  once with thinning in the loader (numpy, per sample) and once on the device in batches
  (``torch.binomial``);
Default store: Vision planes (815 x 50 x 520, one TOF bin), the size the method is for.

- ``step``: training steps of the default UNet (``ModelConfig()`` defaults: width 64, depth 2,
  5 bottom convs) on batches of the same shape.

Writes ``bench/results/loader.json``. Example (what docs/readme/train.md quotes)::

    python bench/loader.py --scale 2 --seconds 10 --workers 2
"""

from __future__ import annotations

import argparse
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from badblock.config import load_config  # noqa: E402
from badblock.data.store import Store, write_store  # noqa: E402
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", help="an existing store (default: build a synthetic mini one)")
    ap.add_argument("--scale", type=int, default=2, help="training scans in the synthetic store")
    ap.add_argument("--scanner", default="vision", help="plane geometry of the synthetic store")
    ap.add_argument("--seconds", type=float, default=8.0, help="time per measurement")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "loader.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from badblock.train.loop import build_data, prepare_batch

    tmp = Path(tempfile.mkdtemp(prefix="bb-loader-"))
    store_path = Path(args.store) if args.store else synthetic_store(tmp, args.scale + 1,
                                                                         args.scanner)
    store = Store.open(store_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {"command": "python bench/loader.py " + " ".join(sys.argv[1:] if argv is None
                                                              else argv),
               "machine": f"{platform.processor() or platform.machine()}, "
                          f"{torch.get_num_threads()} torch threads, device {device}",
               "store": str(store_path), "shape": list(store.shape), "batch": args.batch}

    def cfg_for(thin_on: str):
        sets = [f"run.output={store_path.parent}", f"data.store={store_path}",
                f"data.batch_size={args.batch}", f"data.workers={args.workers}",
                f"data.thin_on={thin_on}", "data.epoch_size=1000000",
                f"scanner.name={store.scanner}"]
        return load_config(None, sets, env={})

    for thin_on in ("loader", "device"):
        cfg = cfg_for(thin_on)
        train_ds, _, info = build_data(cfg, 2 ** cfg.model.depth)
        from badblock.data.dataset import EpochSampler
        from badblock.data.stack import view_padding

        sampler = EpochSampler(cfg.data.epoch_size, args.batch)
        loader = torch.utils.data.DataLoader(train_ds, batch_size=args.batch, sampler=sampler,
                                             num_workers=args.workers)
        it = iter(loader)
        before, _ = view_padding(info["views"], info["views_to"])
        crop = (before, before + info["views"])
        gen = torch.Generator(device=device).manual_seed(0)

        if thin_on == "device":
            # what the DataLoader hands over (clean stacks + masks + targets): the host's share
            # of the work when a GPU does the thinning and augmentation
            results["badblock_loader_only_samples_per_s"] = rate(lambda it=it: next(it),
                                                                 args.seconds, args.batch)
            print(f"badblock loader alone (clean stacks + masks): "
                  f"{results['badblock_loader_only_samples_per_s']:.1f} samples/s", flush=True)

        def one_batch(it=it, cfg=cfg, crop=crop, gen=gen):
            prepare_batch(next(it), cfg, device, gen, crop, augment=True)
            if device.type == "cuda":
                torch.cuda.synchronize()

        results[f"badblock_thin_{thin_on}_samples_per_s"] = rate(one_batch, args.seconds,
                                                                 args.batch)
        where = "numpy, in the loader" if thin_on == "loader" else f"torch, on {device}"
        value = results[f"badblock_thin_{thin_on}_samples_per_s"]
        print(f"badblock loader + thinning ({where}) + augmentation on {device}: "
              f"{value:.1f} samples/s", flush=True)

    mask = dead_block_mask(get_scanner(store.scanner), [(3, 1)])
    sample, load_s, held = tutorial_pipeline(store, tmp, mask, info["views_to"])
    results["tutorial_samples_per_s"] = rate(sample, args.seconds, 1)
    results["tutorial_pickle_load_s"] = load_s
    results["tutorial_bytes_in_memory"] = held
    print(f"tutorial pipeline (pickle + Augmentor): {results['tutorial_samples_per_s']:.1f} "
          f"samples/s (+{load_s:.2f} s to load {held / 2**20:.1f} MiB of pickles)", flush=True)

    from badblock.models import build_model
    from badblock.train.losses import build_loss

    cfg = cfg_for("loader")
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

    results["train_step_samples_per_s"] = rate(step, args.seconds, args.batch)
    print(f"training step, default UNet: {results['train_step_samples_per_s']:.1f} samples/s",
          flush=True)
    full = max(results["badblock_thin_loader_samples_per_s"],
               results["badblock_thin_device_samples_per_s"])
    tut = results["tutorial_samples_per_s"]
    results["speedup_vs_tutorial_loader_only"] = results["badblock_loader_only_samples_per_s"] / tut
    results["speedup_vs_tutorial_full"] = full / tut
    results["full_pipeline_over_step"] = full / results["train_step_samples_per_s"]
    print(f"badblock / tutorial: loader alone {results['speedup_vs_tutorial_loader_only']:.1f}x, "
          f"with thinning + augmentation on {device} {results['speedup_vs_tutorial_full']:.1f}x "
          f"(target >= 10x); full pipeline / training step: "
          f"{results['full_pipeline_over_step']:.1f}x (target >= 2x)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from badblock.utils.atomic import atomic_write_json

    atomic_write_json(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
