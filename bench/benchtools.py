"""What the benchmark scripts share: the machine record, page-cache control, memory and CPU
accounting of a process tree, and the sustained float32 rate of this CPU.

Timings on a shared machine are inflated by the other work on it; every script therefore
records the load average next to its figures and reports ratios against a baseline measured
in the same run. CPU seconds (user + system of the whole process tree) are far less sensitive
to the load than wall seconds: figures "per CPU second" are what compares across runs.
"""

from __future__ import annotations

import os
import platform
import resource
import threading
import time
from pathlib import Path


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages now."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict:
    """The machine a figure was taken on: CPU (with its bf16 units), cores, memory, torch."""
    import torch

    from badblock.utils.hardware import cpu_description

    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_description(), "cpu_count": os.cpu_count(), "memory_mb": mem,
            "gpu": gpu, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "load_avg": load()}


def drop_cache(path: str | os.PathLike) -> None:
    """Write back dirty pages, then drop ``path``'s pages from the page cache (its own pages
    only: the rest of the machine is left alone), so the next read comes from the disk."""
    os.sync()
    if hasattr(os, "posix_fadvise"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cpu_seconds() -> tuple[float, float]:
    """(user, system) CPU seconds of this process and its waited-for children so far."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + c.ru_utime, s.ru_stime + c.ru_stime


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
            out.extend(int(c) for c in text)
    except OSError:
        pass
    return out


def _anon_kb(pid: int) -> int:
    """RssAnon of a process, KiB (0 once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler:
    """Samples, every ``period`` seconds in a thread, this process and all its descendants:
    ``peak_anon_mb``, the largest sum of RssAnon over the tree, and ``peak_rss_anon_mb``, the
    largest RssAnon of one process. Pages a forked child shares copy-on-write with its parent
    count in both, so the sum is an upper bound. (``/proc/PID/status`` is read, not
    ``smaps_rollup``: the latter walks every page table entry, and with a 1.4 GB memory map
    in each process sampling it cost a tenth of a core.) Use as a context manager."""

    def __init__(self, period: float = 0.05):
        self.period = period
        self.peak_anon_mb = 0.0
        self.peak_rss_anon_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            pids, todo = [], [me]
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo.extend(_children(pid))
            sizes = [_anon_kb(p) for p in pids]
            self.peak_anon_mb = max(self.peak_anon_mb, sum(sizes) / 1024)
            self.peak_rss_anon_mb = max(self.peak_rss_anon_mb, max(sizes, default=0) / 1024)
            self._stop.wait(self.period)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def peak_rss_mb() -> float:
    """Peak RSS of this process or of its largest waited-for child, MiB (file pages of
    memory maps included: the kernel can drop those)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return max(s.ru_maxrss, c.ru_maxrss) / 1024


def sgemm_rate(n: int = 2048, seconds: float = 5.0) -> dict:
    """This CPU's sustained float32 matrix-product rate on one thread: GFLOP per second of
    wall time and per second of CPU time (the latter hardly moves with the machine's load).
    One core's ceiling for a network made of convolutions; times ``usable_cores`` it is the
    compute floor of the whole CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.rand(n, n), torch.rand(n, n)
        a @ b
        u0, s0 = cpu_seconds()
        t0, k = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            a @ b
            k += 1
        wall = time.perf_counter() - t0
        u1, s1 = cpu_seconds()
    finally:
        torch.set_num_threads(threads)
    flop = 2.0 * n ** 3 * k
    return {"n": n, "gflop_per_s": round(flop / wall / 1e9, 1),
            "gflop_per_cpu_s": round(flop / max(u1 - u0 + s1 - s0, 1e-9) / 1e9, 1)}


def results_path(ap, args, name: str) -> Path:
    """Where a benchmark writes its JSON: ``args.out``, else ``bench/results/<name>``. A
    ``--tiny`` run (what CI runs so that no script rots) must name ``--out``: its figures mean
    nothing and must never replace measured ones. ``ap`` is the script's ``ArgumentParser``,
    whose ``error`` ends the run with the usage line."""
    if args.out:
        return Path(args.out)
    if getattr(args, "tiny", False):
        ap.error("--tiny needs --out (its figures are not results)")
    return Path(__file__).resolve().parent / "results" / name


def work_folder(args, name: str) -> Path:
    """A training benchmark's work folder (created): ``args.work``, else with ``--tiny`` a
    fresh temporary one (never the measured run's, whose finished trainings a rerun reuses),
    else ``badblock-output/<name>``."""
    if getattr(args, "work", None):
        work = Path(args.work)
    elif getattr(args, "tiny", False):
        import tempfile

        work = Path(tempfile.mkdtemp(prefix=f"{name}-tiny-"))
    else:
        work = Path(__file__).resolve().parents[1] / "badblock-output" / name
    work.mkdir(parents=True, exist_ok=True)
    return work


__all__ = ["load", "machine", "drop_cache", "cpu_seconds", "MemorySampler", "peak_rss_mb",
           "sgemm_rate", "results_path", "work_folder"]
