"""What this machine's CPU can do fast, and the process settings that let it.

The network runs fastest in a different number format and layout on each kind of device; these
rules are measured (``bench/repair.py``, ``bench/train_step.py``), not assumed:

- CUDA: bf16 autocast and channels-last tensors (tensor cores);
- a CPU with native bf16 units (``amx_bf16`` or ``avx512_bf16``): bf16 autocast and
  channels-last (oneDNN's AMX / AVX-512-BF16 kernels);
- any other CPU: float32, channels-last. Without bf16 units, oneDNN emulates bf16 at a
  hundredth of the float32 speed (an AVX2 EPYC: 0.1-0.4 vs 30-75 GFLOP/s per matmul), so
  bf16 is never turned on there.

:func:`native_bf16` is the detection: torch's own CPU probes (the instruction sets its
kernels dispatch on), with ``/proc/cpuinfo``'s flags as the fallback where torch lacks them.

:func:`tune_allocator` stops glibc from returning freed memory to the kernel: a UNet's
activations are tens of MB each, above glibc's mmap threshold, so by default every forward
pass maps and unmaps them and the kernel zero-fills every page again (measured: a fifth to
a third of the CPU time, most of it system time). Keeping the heap costs nothing once the
working set is reached: the memory is reused by the next batch.

``OMP_WAIT_POLICY=PASSIVE`` (set by ``badblock/__init__.py`` before torch loads, unless the
environment already says otherwise): torch's OpenMP threads otherwise spin at every barrier
waiting for each other; on a machine shared with other work a descheduled thread makes its
partners spin for a whole time slice (measured: training 3-4x slower with 2 threads than with
1 on a loaded 2-core machine, and as fast as 1 thread with the passive policy).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import lru_cache

# glibc's mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# Freed memory at the top of the heap is kept up to this much before being returned.
TRIM_THRESHOLD_BYTES = 1 << 30
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The ``flags`` of the first CPU in ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AMX-BF16 or AVX512-BF16)."""
    import torch

    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if all(p is not None for p in probes):
        return any(bool(p()) for p in probes)
    return bool(cpu_flags() & set(BF16_FLAGS))


def cpu_description() -> str:
    """The CPU model and which bf16 units it has, for benchmark records."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    units = sorted(cpu_flags() & set(BF16_FLAGS))
    return f"{model} ({', '.join(units) if units else 'no bf16 units'}), {usable_cores()} cores"


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask; cgroup/Slurm limits show here)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def fast_formats(device) -> tuple[bool, bool]:
    """``(bf16, channels_last)`` for the network on ``device`` (see the module docstring)."""
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        return True, True
    if kind == "cpu":
        return native_bf16(), True
    return False, False


_tuned = False


def tune_allocator() -> bool:
    """Keep freed memory in this process's heap (glibc only; elsewhere nothing happens).

    Sets ``M_MMAP_MAX = 0`` (large blocks come from the heap, not from fresh mappings) and
    ``M_TRIM_THRESHOLD`` = 1 GiB (the heap top is not given back after every batch). Peak
    memory is unchanged: what a batch frees, the next one reuses. Returns True when the
    settings took effect. Idempotent.
    """
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _tuned = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                          TRIM_THRESHOLD_BYTES))
    return _tuned


__all__ = ["native_bf16", "cpu_flags", "cpu_description", "usable_cores", "fast_formats",
           "tune_allocator"]
