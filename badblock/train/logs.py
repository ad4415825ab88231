"""Training logs: plain loss files (as the original scripts wrote them), JSON lines,
progress.png, TensorBoard, visdom; and the per-epoch record and messages.

Everything is rewritten from the run's history (kept in the checkpoint) each epoch, so a resumed
run's logs hold each epoch exactly once. Only rank 0 builds a :class:`RunLog`.

Files in the run folder:
- ``train_loss.txt``, ``test_loss.txt``, ``recon_loss.txt``: one value per epoch and line
  (``np.loadtxt``): mean training loss, validation loss, and validation NRMSE of the network's
  repair on damaged bins, estimated from the measured scans (the original scripts' "recon"
  curve).
- ``log.jsonl``: one JSON object per epoch (losses, lr, samples/s, epoch time, peak RSS and GPU
  memory, network and baseline NRMSE estimated from the measured scans and, on simulated
  stores, against the truth, collapse flag).
- ``progress.png``: loss curves and NRMSE of network vs. baseline; redrawn at most every
  :data:`PLOT_EVERY_S` seconds and when the log is closed (drawing takes about a second on a
  small CPU: every epoch of the demo's 16 it was a tenth of the training time).
- ``tensorboard/``: event files (``tensorboard --logdir RUN/tensorboard``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

from badblock.utils.atomic import atomic_path, atomic_write_text
from badblock.utils.memory import peak_rss_mb

PLOT_EVERY_S = 30.0
LOSS_FILES = {"train_loss.txt": "train_loss", "test_loss.txt": "val_loss",
              "recon_loss.txt": "nrmse_net"}
JSONL, PLOT, TENSORBOARD = "log.jsonl", "progress.png", "tensorboard"
LOG_FILES = (*LOSS_FILES, JSONL, PLOT)


def remove_logs(folder: str | os.PathLike) -> None:
    """Remove what a :class:`RunLog` writes into ``folder`` (a run that failed before its first
    checkpoint leaves no logs of a run that does not exist)."""
    import shutil

    folder = Path(folder)
    for name in LOG_FILES:
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / TENSORBOARD, ignore_errors=True)


def _fmt(v) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def epoch_record(epoch: int, step: int, partial: bool, running: dict, val: dict, lr: float,
                 collapse_warmup: int, device) -> dict:
    """One epoch's line of the history (``epoch`` 1-based): training loss and throughput from
    the ``running`` sums, the validation numbers ``val``, memory peaks, and ``collapse`` (past
    ``train.collapse_warmup`` epochs, the network worse than the baseline)."""
    import torch

    r = running
    rec = {"epoch": epoch, "step": step, "partial": partial,
           "train_loss": r["loss_sum"] / max(r["batches"], 1), **val, "lr": lr,
           "samples_per_s": r["samples"] / max(r["seconds"], 1e-9),
           "epoch_time_s": r["seconds"], "peak_rss_mb": peak_rss_mb(),
           "peak_gpu_mb": (torch.cuda.max_memory_allocated(device) / 2**20
                           if device.type == "cuda" else 0.0)}
    rec["collapse"] = bool(epoch > collapse_warmup and rec["nrmse_net"] > rec["nrmse_baseline"])
    return rec


def epoch_message(rec: dict, reset: bool) -> str:
    """The line ``badblock train`` prints at the end of an epoch."""
    return (f"epoch {rec['epoch']}: train {rec['train_loss']:.5g}  val "
            f"{rec['val_loss']:.5g}  NRMSE damaged bins vs {rec['reference']}: network "
            f"{rec['nrmse_net']:.4f}  baseline {rec['nrmse_baseline']:.4f}"
            + (f"  (vs truth, not used for choices: {rec['nrmse_net_truth']:.4f} / "
               f"{rec['nrmse_baseline_truth']:.4f})" if "nrmse_net_truth" in rec else "")
            + f"  lr {rec['lr']:.3g}  {rec['samples_per_s']:.1f} samples/s"
            f"{'  (optimizer reset)' if reset else ''}")


def collapse_warning(rec: dict) -> str:
    """The warning printed when an epoch's record has ``collapse`` set."""
    return ("WARNING: the network is WORSE than the simple baseline (divide by "
            f"1 - f) after {rec['epoch']} epochs: NRMSE {rec['nrmse_net']:.4f} > "
            f"{rec['nrmse_baseline']:.4f}. Training may have collapsed: check the "
            "learning rate, the loss and the normalisation")


class RunLog:
    """Writes all per-epoch outputs of one training run."""

    def __init__(self, folder: str | os.PathLike, tensorboard: bool = True, visdom: bool = False,
                 visdom_server: str = "http://localhost", visdom_port: int = 8097):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tb = None
        self._tb_wanted = tensorboard
        self._vis = None
        self._vis_windows: dict[str, object] = {}
        self._plotted_at: float | None = None
        self._unplotted: list[dict] | None = None
        if visdom:
            self._vis = _connect_visdom(visdom_server, visdom_port)

    def write_epoch(self, history: list[dict]) -> None:
        """Rewrite text logs and plots from the whole history; send the last epoch to TB/visdom."""
        for name, key in LOSS_FILES.items():
            atomic_write_text(self.folder / name,
                              "".join(_fmt(h.get(key)) + "\n" for h in history))
        atomic_write_text(self.folder / JSONL,
                          "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))
        if self._plotted_at is None or time.monotonic() - self._plotted_at >= PLOT_EVERY_S:
            self.plot(history)
        else:
            self._unplotted = list(history)
        if history:
            self._tensorboard(history[-1])
            self._visdom(history)

    def plot(self, history: list[dict]) -> None:
        """Draw ``progress.png`` from ``history`` now."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [h["epoch"] for h in history]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        ax = axes[0]
        ax.plot(epochs, [h.get("train_loss") for h in history], "o-", label="train")
        ax.plot(epochs, [h.get("val_loss") for h in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title("loss")
        _log_if_positive(ax, [h.get("train_loss") for h in history])
        ax.legend()
        ax = axes[1]
        ax.plot(epochs, [h.get("nrmse_net") for h in history], "o-", label="network")
        ax.plot(epochs, [h.get("nrmse_baseline") for h in history], "k--",
                label="baseline: divide by 1 - f")
        ax.set_xlabel("epoch")
        ax.set_ylabel("NRMSE on damaged bins")
        ax.set_title(f"validation ({history[-1].get('reference', '?')})" if history else "")
        ax.legend()
        ax = axes[2]
        ax.plot(epochs, [h.get("lr") for h in history], "o-")
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate")
        _log_if_positive(ax, [h.get("lr") for h in history])
        fig.subplots_adjust(left=0.06, right=0.99, bottom=0.14, top=0.92, wspace=0.28)
        with atomic_path(self.folder / PLOT) as tmp:
            fig.savefig(tmp, format="png", dpi=90)
        plt.close(fig)
        self._plotted_at = time.monotonic()
        self._unplotted = None

    def _tensorboard(self, rec: dict) -> None:
        if not self._tb_wanted:
            return
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # tensorboard is in requirements; keep training anyway
                warnings.warn(f"TensorBoard unavailable ({exc}); no event files written",
                              stacklevel=2)
                self._tb_wanted = False
                return
            # purge_step drops events past the resume point that an interrupted run left behind.
            self._tb = SummaryWriter(str(self.folder / TENSORBOARD), purge_step=rec["epoch"])
        for key, value in rec.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self._tb.add_scalar(key, value, rec["epoch"])
        self._tb.flush()

    def _visdom(self, history: list[dict]) -> None:
        if self._vis is None:
            return
        import numpy as np

        try:
            for key in ("train_loss", "val_loss", "nrmse_net"):
                y = np.array([h.get(key, float("nan")) for h in history], dtype=float)
                x = np.array([h["epoch"] for h in history], dtype=float)
                win = self._vis_windows.get(key)
                opts = dict(title=key, xlabel="epoch", ylabel=key)
                self._vis_windows[key] = self._vis.line(X=x, Y=y, win=win, opts=opts,
                                                        update="replace" if win else None)
        except Exception as exc:  # a plotting server never stops training
            print(f"badblock train: warning: visdom stopped working ({exc}); "
                  "live plots are off for this run", file=sys.stderr)
            self._vis = None

    def close(self) -> None:
        """Draw what the plot still lacks; close TensorBoard's writer."""
        if self._unplotted:
            self.plot(self._unplotted)
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _log_if_positive(ax, values) -> None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if vals and min(vals) > 0 and max(vals) / min(vals) > 20:
        ax.set_yscale("log")


def _connect_visdom(server: str, port: int):
    """A visdom client, or None with one warning when the package or the server is missing."""
    try:
        import visdom
    except ImportError:
        print("badblock train: warning: train.visdom is on but the visdom package is not "
              "installed (pip install visdom); continuing without live plots", file=sys.stderr)
        return None
    try:
        vis = visdom.Visdom(server=server, port=port, raise_exceptions=True,
                            use_incoming_socket=False)
        if not vis.check_connection(timeout_seconds=3):
            raise ConnectionError("no answer")
    except Exception as exc:  # any failure means: no live plots
        print(f"badblock train: warning: no visdom server at {server}:{port} ({exc}); "
              "continuing without live plots", file=sys.stderr)
        return None
    return vis
