"""Where the engine's chunks run besides one plain loop: threads around the network in one
process, or forked worker processes (the reasons and the rules: :mod:`badblock.inference.engine`).

Both produce what the plain loop produces, byte for byte: a chunk is built, predicted and
merged by the same functions wherever it runs, and no two chunks write the same plane.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import traceback

from badblock.errors import BadInputError
from badblock.inference.engine import (
    Buffers,
    Chunk,
    MergeStats,
    PlaneJob,
    chunks_of,
    copy_planes,
    merge,
    predict,
)


class Pipeline:
    """Stacker thread -> network (calling thread) -> merger thread, two buffer sets: the next
    chunk's stacks are built and the last chunk's predictions merged (after the plane copies)
    while the network runs. ``chunks``: the item lists; results are added to ``stats``;
    ``done(1)`` after each merge. An exception in any of the three is raised by :meth:`run`
    after the others have stopped."""

    def __init__(self, job: PlaneJob, predictor, batch: int, chunks: list, stats: MergeStats,
                 done):
        self.job, self.predictor, self.chunks, self.stats, self.done = (
            job, predictor, chunks, stats, done)
        self.free: queue.Queue = queue.Queue()
        for _ in range(2):
            self.free.put(Buffers(job, batch))
        self.ready: queue.Queue = queue.Queue()
        # bounded: predictions waiting for the merge may not pile up with the scan's size
        self.finished: queue.Queue = queue.Queue(maxsize=2)
        self.error: list[BaseException] = []
        self.stop = threading.Event()

    def _guard(self, fn):
        def body():
            try:
                fn()
            except BaseException as exc:  # handed to the calling thread, which re-raises it
                self.error.append(exc)
                self.stop.set()
                self.ready.put(None)
        return body

    def _stack(self):
        for i, items in enumerate(self.chunks):
            buffers = self._take(self.free)
            if buffers is None:
                return
            chunk = buffers.fill(self.job, Chunk(i), items)
            chunk.buffers = buffers
            self.ready.put(chunk)
        self.ready.put(None)

    def _merge(self):
        self.stats.copy_s = copy_planes(self.job)
        while True:
            chunk = self._take(self.finished)
            if chunk is None:
                return
            self.stats.add(merge(self.job, chunk))
            self.done(1)

    def _take(self, q):
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def _put(self, q, item) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> MergeStats:
        n_bins = self.job.data.shape[-1]
        threads = [threading.Thread(target=self._guard(f), daemon=True, name=f"repair-{n}")
                   for n, f in (("stack", self._stack), ("merge", self._merge))]
        for th in threads:
            th.start()
        try:
            while True:
                chunk = self.ready.get()
                if chunk is None or self.error:
                    break
                chunk.pred = predict(self.predictor, chunk, self.job.views_to, n_bins)
                self.free.put(chunk.buffers)  # the stacks are consumed; the merge needs pred
                chunk.stacks = chunk.masks = chunk.senses = chunk.fills = chunk.buffers = None
                if not self._put(self.finished, chunk):
                    break
            self._put(self.finished, None)
            threads[1].join()
        finally:
            if self.error or threads[1].is_alive():
                self.stop.set()
            for th in threads:
                th.join()
        if self.error:
            raise self.error[0]
        return self.stats


def _worker(job: PlaneJob, predictor, batch: int, counter, finished, results, rank: int):
    """A forked worker: claim chunks from ``counter`` until none are left."""
    try:
        import torch

        torch.set_num_threads(1)
        chunks = chunks_of(job, batch)
        buffers = Buffers(job, batch)
        stats = MergeStats()
        n_bins = job.data.shape[-1]
        while True:
            with counter.get_lock():
                i = counter.value
                counter.value += 1
            if i >= len(chunks):
                break
            chunk = buffers.fill(job, Chunk(i), chunks[i])
            chunk.pred = predict(predictor, chunk, job.views_to, n_bins)
            stats.add(merge(job, chunk))
            with finished.get_lock():
                finished.value += 1
        results.put((rank, "ok", vars(stats)))
    except BadInputError as exc:
        results.put((rank, "bad", (str(exc.where), exc.problem)))
    except BaseException as exc:  # reported to the parent, which raises
        results.put((rank, "error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        results.close()
        results.join_thread()
        os._exit(0)


def run_processes(job: PlaneJob, predictor, batch: int, n: int, done=None) -> MergeStats:
    """``job``'s chunks of ``batch`` images in ``n`` forked processes of one torch thread each,
    the plane copies in this one meanwhile. ``done(k, total)`` as chunks finish. A worker's
    :class:`BadInputError` is raised here as it was; any other failure, or a worker killed
    (e.g. for memory), is a RuntimeError; the other workers are then stopped."""
    total = len(chunks_of(job, batch))
    done = (lambda _n: None) if done is None else (lambda k, f=done: f(k, total))
    ctx = multiprocessing.get_context("fork")
    counter, finished = ctx.Value("i", 0), ctx.Value("i", 0)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(job, predictor, batch, counter, finished,
                                               results, r), daemon=True) for r in range(n)]
    for p in procs:
        p.start()
    stats, reported, seen = MergeStats(), {}, 0
    try:
        stats.copy_s = copy_planes(job)
        while len(reported) < n:
            try:
                rank, kind, payload = results.get(timeout=0.2)
                reported[rank] = (kind, payload)
            except queue.Empty:
                dead = [p for r, p in enumerate(procs) if r not in reported
                        and p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"repair worker {dead[0].pid} died (exit code "
                                       f"{dead[0].exitcode}; out of memory?)") from None
            now = finished.value
            if now > seen:
                done(now - seen)
                seen = now
        for kind, payload in reported.values():
            if kind == "bad":
                raise BadInputError(*payload)
            if kind == "error":
                raise RuntimeError(f"repair worker failed: {payload}")
            stats.add(MergeStats(**payload))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
    if finished.value > seen:
        done(finished.value - seen)
    return stats


__all__ = ["Pipeline", "run_processes"]
