"""Tiny training stores for the trainer's tests: smooth synthetic sinograms of the ``mini``
scanner (a few Gaussian blobs, Poisson counts, noiseless truth kept), built in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from badblock.config import load_config
from badblock.data.store_writer import write_store
from badblock.physics.scanners import get_scanner


def synthetic_scan(seed: int, scanner: str = "mini", peak: float = 40.0):
    """(counts uint16, truth float32), both ``[TOF, plane, view, bin]`` of the scanner."""
    sc = get_scanner(scanner)
    n_tof, n_planes, n_views, n_bins = sc.shape
    rng = np.random.default_rng(seed)
    theta = np.pi * np.arange(n_views) / n_views
    s = np.linspace(-1, 1, n_bins)
    truth = np.zeros(sc.shape, np.float32)
    z = np.linspace(0, 1, n_planes)
    for _ in range(3):
        x0, y0 = rng.uniform(-0.4, 0.4, 2)
        width = rng.uniform(0.08, 0.2)
        centre = x0 * np.cos(theta)[:, None] + y0 * np.sin(theta)[:, None]
        prof = np.exp(-0.5 * ((s[None, :] - centre) / width) ** 2)  # [view, bin]
        axial = 0.5 + 0.5 * np.sin(np.pi * (z * rng.uniform(0.5, 1.5) + rng.uniform()))
        for t in range(n_tof):
            tof_w = np.exp(-0.5 * ((t - n_tof // 2) / 1.2) ** 2)
            truth[t] += (peak * tof_w * axial[:, None, None] * prof[None]).astype(np.float32)
    counts = rng.poisson(truth).astype(np.uint16)
    return counts, truth


def make_store(path: Path, n_train: int = 2, n_val: int = 1, seed: int = 0) -> Path:
    sc = get_scanner("mini")
    scans, truths = {}, {}
    for i in range(n_train + n_val):
        scans[f"scan_{i:03d}"], truths[f"scan_{i:03d}"] = synthetic_scan(seed + i)
    val = [f"scan_{i:03d}" for i in range(n_train, n_train + n_val)]
    return write_store(path, scans, truths=truths, val=val, segments=sc.segments,
                       tof_order="siemens", scanner="mini")


def tiny_config(out: Path, **sets):
    """A config for a fast CPU run on the store ``out/store``; ``sets`` are dotted overrides."""
    base = {"run.output": str(out), "run.threads": 1, "run.device": "cpu",
            "data.epoch_size": 8, "data.batch_size": 4, "train.val_batches": 1,
            "model.width": 4, "model.depth": 2, "model.bottom_convs": 1,
            "train.epochs": 2, "train.tensorboard": False}
    base.update(sets)
    return load_config(None, [f"{k}={v}" for k, v in base.items()], env={})


def overrides(out: Path, **sets) -> list[str]:
    """The same settings as ``--set`` arguments for a subprocess."""
    base = {"run.output": str(out), "run.threads": 1, "run.device": "cpu",
            "data.epoch_size": 8, "data.batch_size": 4, "train.val_batches": 1,
            "model.width": 4, "model.depth": 2, "model.bottom_convs": 1,
            "train.epochs": 2, "train.tensorboard": False}
    base.update(sets)
    args = []
    for k, v in base.items():
        args += ["--set", f"{k}={v}"]
    return args
