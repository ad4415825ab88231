"""The repair's hot path: context stacks in batches through a predictor, merged into an output.

A :class:`PlaneJob` lists the plane images ``(t, p)`` to predict, in order, and the plane
ranges to copy unchanged. The images are cut into chunks of ``batch`` consecutive images; each
chunk is one network call and is processed the same way wherever it runs, so every path below
writes the same bytes for the same predictor:

1. its context stacks ``[n, 2k+1, Vw, B]`` (and mask and sensitivity stacks, and the
   model-based fill of the centre plane ``[n, 1, Vw, B]``, when the predictor takes them) are
   built into buffers allocated once (:func:`badblock.physics.stack.plane_stack_into`);
   ``Vw = Vp + 2 margin``, the padded views plus the views each side that only the
   predictor's prior channel reads;
2. an image whose context stack holds no counts at all (every value of the ``2k+1`` view-padded
   planes the network would see is 0) is not sent to the network: its repair is a copy, since
   with ``max``/``mean`` normalisation the prediction is the network output times the stack's
   scale, 1e-8 (times the sensitivity for per-LOR networks), which rounds to 0 (for float
   outputs it differs from 0 by that factor x the output);
   such a plane is all zeros, so ``where(f > 0, prediction, input)`` is the input anyway;
3. the rest go through the predictor in one call;
4. each prediction is cropped to the real views; non-finite values become the input's,
   integer outputs are rounded (``np.rint``) and clipped to the dtype's range, and the plane is
   written as ``where(f > 0, prediction, input)``: bins with f = 0 are the input's, bit for bit.

Where chunks run (:func:`run_job`):

- one process: building the next chunk's stacks and merging the last chunk's predictions run
  in two threads beside the network (numpy and torch release the GIL), the copy of untouched
  planes in the merging thread before the first merge;
- ``workers`` > 1 processes (CPU predictors; forked, so they share the model, the input map
  and the output map): each takes the next chunk from a shared counter and runs 1 to 4 on it
  with one torch thread. On a CPU, processes beat threads: torch's threads synchronise at
  every operation and wait for each other whenever one is descheduled; processes never wait
  (measured: 2 processes x 1 thread ran 1.3x the images of 1 x 2 threads with the passive
  wait policy, 3.8x with the default, on a shared 2-core machine). Forked children must stay
  at one thread: libgomp's thread pool does not survive ``fork`` (a child's second thread
  hangs).

Memory is bounded by the chunk buffers and one network call per process, whatever the scan
size: see :func:`plan_workers`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from badblock.errors import BadInputError
from badblock.physics.stack import mask_stack_into, plane_stack_into, view_padding

# Memory for one network call's activations (bytes): small calls keep the working tensors in
# the CPU's caches, and images are large enough (a Vision plane is 64 x 520 pixels) that one
# image already makes efficient matrix products.
CALL_BYTES = 256 << 20
# Memory for all processes' network calls together: the 2 GB peak target less the parent's
# own (torch, the model, the buffers).
TOTAL_BYTES = 1536 << 20
# Chunks each automatically started worker process should have to do, at least.
CHUNKS_PER_WORKER = 4
# Largest relative RMS difference of bf16 from float32 predictions on the repaired bins before
# repair falls back to float32 (measured on the demo's network: 0.004).
BF16_TOLERANCE = 0.02


@dataclass
class PlaneJob:
    """One scan's repair work. ``data``/``out``: input and output ``[T, P, V, B]`` (memmaps);
    ``mask``: float32 ``[P, V, B]``; ``items``: ``(t, p)`` images for the network, in order;
    ``copies``: ``(t, p0, p1)`` plane ranges copied unchanged; ``views_to`` (Vp) and the
    stack geometry (``context``, ``segments``, ``tof_order``); ``mask_channel``: pass mask
    stacks; ``skip_empty``: copy images whose context stack is all zeros (see the module
    docstring); ``margin``: views built beyond ``Vp`` on each side (the predictor's prior
    channel reads them); ``sens``: real LORs per bin ``[1, P, V, B]`` when the predictor works
    per LOR (its stacks are passed as a third argument), else None; ``fill``: the scan's
    model-based fill ``[T, P, V, B]`` when the predictor takes it (its centre planes are the
    fourth argument), else None."""

    data: object
    out: np.ndarray
    mask: np.ndarray
    items: list[tuple[int, int]]
    copies: list[tuple[int, int, int]]
    context: int
    segments: list | None
    tof_order: str
    views_to: int
    mask_channel: bool
    skip_empty: bool
    margin: int = 0
    sens: np.ndarray | None = None
    fill: np.ndarray | None = None

    @property
    def wide(self) -> int:
        """Views of the stacks built: ``Vp + 2 margin``."""
        return self.views_to + 2 * self.margin


@dataclass
class MergeStats:
    """Counts over the merged images: bins clipped below/above the dtype's range and
    non-finite predictions (both on bins with f > 0), images predicted, images skipped as
    empty; and the seconds each stage was busy, summed over threads and processes (stacks
    built, network calls, merges, plane copies): where the time goes, not the wall time."""

    clipped_low: int = 0
    clipped_high: int = 0
    nonfinite: int = 0
    predicted: int = 0
    skipped: int = 0
    stack_s: float = 0.0
    network_s: float = 0.0
    merge_s: float = 0.0
    copy_s: float = 0.0

    def add(self, other: MergeStats) -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))


@dataclass
class Chunk:
    index: int
    kept: list[tuple[int, int]] = field(default_factory=list)
    stacks: np.ndarray | None = None
    masks: np.ndarray | None = None
    senses: np.ndarray | None = None
    fills: np.ndarray | None = None
    pred: np.ndarray | None = None
    empty: list[tuple[int, int]] = field(default_factory=list)
    buffers: Buffers | None = None
    seconds: dict = field(default_factory=dict)


class Buffers:
    """Stack, mask and sensitivity buffers ``[batch, 2k+1, Vw, B]`` float32 (the latter two
    when the job needs them), filled chunk by chunk."""

    def __init__(self, job: PlaneJob, batch: int):
        n_bins = job.data.shape[-1]
        shape = (batch, 2 * job.context + 1, job.wide, n_bins)
        self.stacks = np.empty(shape, np.float32)
        self.masks = np.empty(shape, np.float32) if job.mask_channel else None
        self.senses = np.empty(shape, np.float32) if job.sens is not None else None
        self.fills = (np.empty((batch, 1) + shape[2:], np.float32) if job.fill is not None
                      else None)

    def fill(self, job: PlaneJob, chunk: Chunk, items) -> Chunk:
        t0 = time.perf_counter()
        n = 0
        for t, p in items:
            s = plane_stack_into(self.stacks[n], job.data, t, p, job.context, job.segments,
                                 job.tof_order)
            if job.skip_empty and not s.any():
                chunk.empty.append((t, p))
                continue
            if self.masks is not None:
                mask_stack_into(self.masks[n], job.mask, p, job.context, job.segments)
            if self.senses is not None:  # the same for every TOF bin: its own, "none"
                plane_stack_into(self.senses[n], job.sens, 0, p, job.context, job.segments,
                                 "none")
            if self.fills is not None:
                plane_stack_into(self.fills[n], job.fill, t, p, 0, job.segments, job.tof_order)
            chunk.kept.append((t, p))
            n += 1
        chunk.stacks = self.stacks[:n]
        chunk.masks = None if self.masks is None else self.masks[:n]
        chunk.senses = None if self.senses is None else self.senses[:n]
        chunk.fills = None if self.fills is None else self.fills[:n]
        chunk.seconds["stack_s"] = time.perf_counter() - t0
        return chunk


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def predict(predictor, chunk: Chunk, views_to: int, n_bins: int) -> np.ndarray:
    """The predictor on a chunk's stacks: float32 ``[n, Vp, B]`` (checked)."""
    n = len(chunk.kept)
    if n == 0:
        return np.empty((0, views_to, n_bins), np.float32)
    t0 = time.perf_counter()
    extra = () if chunk.senses is None else (chunk.senses,)
    if chunk.fills is not None:
        extra = (chunk.senses, chunk.fills)
    pred = _to_numpy(predictor(chunk.stacks, chunk.masks, *extra))
    chunk.seconds["network_s"] = time.perf_counter() - t0
    if pred.shape != (n, views_to, n_bins):
        raise BadInputError("predictor", f"returned shape {pred.shape}, expected "
                                         f"{(n, views_to, n_bins)}")
    return pred


def merge(job: PlaneJob, chunk: Chunk) -> MergeStats:
    """Write a chunk's predictions into ``job.out`` by the repair contract (module docstring,
    step 4), and the planes of its empty images as they are (step 2)."""
    t0 = time.perf_counter()
    out_dtype = job.out.dtype
    stats = MergeStats(predicted=len(chunk.kept), skipped=len(chunk.empty), **chunk.seconds)
    for t, p in chunk.empty:
        job.out[t, p] = job.data[t, p]
    n_views = job.data.shape[2]
    before, _ = view_padding(n_views, job.views_to)
    is_int = out_dtype.kind in "iu"
    lo, hi = (np.iinfo(out_dtype).min, np.iinfo(out_dtype).max) if is_int else (None, None)
    for i, (t, p) in enumerate(chunk.kept):
        original = np.asarray(job.data[t, p])
        value = chunk.pred[i, before:before + n_views]
        damaged = job.mask[p] > 0
        bad = ~np.isfinite(value)
        if bad.any():
            stats.nonfinite += int((bad & damaged).sum())
            value = np.where(bad, original, value)
        if is_int:
            value = np.rint(value)
            stats.clipped_low += int(((value < lo) & damaged).sum())
            stats.clipped_high += int(((value > hi) & damaged).sum())
            value = np.clip(value, lo, hi)
        job.out[t, p] = np.where(damaged, value, original).astype(out_dtype)
    stats.merge_s = time.perf_counter() - t0
    return stats


def copy_planes(job: PlaneJob, chunk_bytes: int = 64 << 20) -> float:
    """Copy ``job.copies`` from input to output, ``chunk_bytes`` at a time; returns the
    seconds it took."""
    t0 = time.perf_counter()
    _, _, n_views, n_bins = job.data.shape
    step = max(1, chunk_bytes // max(1, n_views * n_bins * job.out.dtype.itemsize))
    for t, p0, p1 in job.copies:
        for a in range(p0, p1, step):
            b = min(p1, a + step)
            job.out[t, a:b] = job.data[t, a:b]
    return time.perf_counter() - t0


def chunks_of(job: PlaneJob, batch: int) -> list[list[tuple[int, int]]]:
    """The items cut into network calls of ``batch`` consecutive images."""
    return [job.items[i:i + batch] for i in range(0, len(job.items), batch)]


def plan_workers(predictor, job: PlaneJob, batch_size: int, workers: int | None
                 ) -> tuple[int, int]:
    """``(batch, workers)``: images per network call and processes.

    ``batch``: at most ``batch_size``, and (when the predictor states
    ``bytes_per_image(views, bins)``) what fits :data:`CALL_BYTES` (at least 1) -- chosen
    independently of the worker count, so that every worker count cuts the same chunks.
    ``workers`` (None or 0 = auto): on a CPU torch predictor as many as there are usable cores,
    no more than :data:`TOTAL_BYTES` of network calls hold, and at most one per
    :data:`CHUNKS_PER_WORKER` chunks (starting a process costs about as much as a few network
    calls); any other predictor runs in this process. A given count is capped by the number of
    chunks only. Forking needs ``os.fork``.
    """
    from badblock.utils.hardware import usable_cores

    n_views, n_bins = job.wide, job.data.shape[-1]
    per_image = getattr(predictor, "bytes_per_image", None)
    per_image = int(per_image(n_views, n_bins)) if callable(per_image) else 0
    batch = max(1, int(batch_size))
    if per_image:
        batch = max(1, min(batch, CALL_BYTES // per_image))
    n_chunks = -(-len(job.items) // batch)
    if workers:
        n = int(workers)
    else:
        device = getattr(predictor, "device", None)
        n = usable_cores() if getattr(device, "type", None) == "cpu" else 1
        if per_image:
            n = min(n, max(1, TOTAL_BYTES // (batch * per_image)))
        n = min(n, max(1, n_chunks // CHUNKS_PER_WORKER))
    if not hasattr(os, "fork"):
        n = 1
    return batch, max(1, min(n, n_chunks))


def check_bf16(predictor, job: PlaneJob, batch: int, log) -> float | None:
    """With bf16 on, compare bf16 to float32 on the first chunk's repaired bins; above
    :data:`BF16_TOLERANCE` switch the predictor to float32. Returns the relative RMS
    difference (None when bf16 is off or nothing was checked)."""
    if not getattr(predictor, "amp", False) or not hasattr(predictor, "bf16_error"):
        return None
    for items in chunks_of(job, batch):
        chunk = Buffers(job, batch).fill(job, Chunk(0), items)
        if not chunk.kept:
            continue
        region = np.stack([_padded_region(job, p) for _, p in chunk.kept])
        err = predictor.bf16_error(chunk.stacks, chunk.masks, region, sens=chunk.senses,
                                   fill=chunk.fills)
        if err > BF16_TOLERANCE:
            predictor.amp = False
            log(f"bf16 predictions differ from float32 by {err:.3g} (relative RMS on the "
                f"repaired bins, tolerance {BF16_TOLERANCE}): repairing in float32")
        return err
    return None


def _padded_region(job: PlaneJob, p: int) -> np.ndarray:
    """bool ``[Vp, B]``: plane ``p``'s bins with f > 0, False in the view padding."""
    before, after = view_padding(job.data.shape[2], job.views_to)
    return np.pad(job.mask[p] > 0, ((before, after), (0, 0)))


def run_serial(job: PlaneJob, predictor, batch: int, overlap: bool = True,
               done=None) -> MergeStats:
    """All chunks in this process (module docstring); ``overlap``: stacks and merges in threads
    beside the network (the same bytes as without). ``done(n, total)`` is called as ``n``
    more of the ``total`` chunks are finished."""
    chunks = chunks_of(job, batch)
    n_bins = job.data.shape[-1]
    stats = MergeStats()
    total = len(chunks)
    done = (lambda _n: None) if done is None else (lambda n, f=done: f(n, total))
    if not overlap:
        stats.copy_s = copy_planes(job)
        buffers = Buffers(job, batch)
        for i, items in enumerate(chunks):
            chunk = buffers.fill(job, Chunk(i), items)
            chunk.pred = predict(predictor, chunk, job.views_to, n_bins)
            stats.add(merge(job, chunk))
            done(1)
        return stats
    from badblock.inference.parallel import Pipeline

    return Pipeline(job, predictor, batch, chunks, stats, done).run()


def run_job(job: PlaneJob, predictor, *, batch_size: int, workers: int | None = None,
            overlap: bool = True, log=None, done=None) -> tuple[MergeStats, dict]:
    """Run ``job`` (module docstring); ``done(n, total)`` is told as chunks finish. Returns the
    merged stats and what ran: ``batch``, ``workers``, ``bf16`` (on or off after the check)
    and ``bf16_error``."""
    log = log or (lambda _msg: None)
    batch, n = plan_workers(predictor, job, batch_size, workers)
    err = check_bf16(predictor, job, batch, log)
    info = {"batch": batch, "workers": n, "bf16": bool(getattr(predictor, "amp", False)),
            "bf16_error": err}
    if n == 1:
        return run_serial(job, predictor, batch, overlap, done), info
    from badblock.inference.parallel import run_processes

    return run_processes(job, predictor, batch, n, done), info


__all__ = ["PlaneJob", "MergeStats", "Chunk", "Buffers", "run_job", "run_serial",
           "plan_workers", "merge", "copy_planes", "chunks_of", "predict", "check_bf16",
           "CALL_BYTES", "TOTAL_BYTES", "CHUNKS_PER_WORKER", "BF16_TOLERANCE"]
