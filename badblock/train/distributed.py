"""Several processes, GPUs and nodes: process groups and collectives over the ranks.

Which rank and device a process has is found by :mod:`badblock.utils.ranks` (torchrun or
Slurm environment variables); this module joins the job's process group (NCCL on GPU, gloo on
CPU) and offers the few collectives training needs, each a no-op in a single process.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from badblock.utils.ranks import (  # noqa: F401  (re-exported: training's one entry point)
    DistEnv,
    detect_env,
    select_device,
)


def init_process_group(env: DistEnv, device: torch.device, timeout_s: int = 1800) -> None:
    """Join the job's process group (NCCL on GPU, gloo on CPU); no-op for a single process."""
    if not env.distributed or dist.is_initialized():
        return
    if env.master_addr:
        os.environ.setdefault("MASTER_ADDR", env.master_addr)
    if env.master_port:
        os.environ.setdefault("MASTER_PORT", str(env.master_port))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size,
                            timeout=timedelta(seconds=timeout_s))


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks (in place where distributed); returns it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank: one rank's preemption stops all of them."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_buffers(model: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP syncs buffers at the start of each forward, so after the last step of an epoch each
    rank holds its own statistics; validation and checkpoints want one model.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=src)
