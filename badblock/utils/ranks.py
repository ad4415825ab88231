"""Where this process runs: its rank among its peers (torchrun or Slurm) and its device.

Ranks come from torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR/PORT``) or, when
those are absent, from Slurm (``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NTASKS``; the master is
the first host of ``SLURM_JOB_NODELIST`` and the port is derived from ``SLURM_JOB_ID`` so that
all tasks of a job agree without talking). The device is chosen by local rank: no
``--gpus-per-task``, which would hide NVLink peers. Training (process groups) and inference
(the device a predictor runs on) both start here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistEnv:
    """This process among its peers: global ``rank`` of ``world_size``, ``local_rank`` on its
    node (which GPU it takes), the rendezvous address and port, and where that came from."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    source: str = "single"  # single | torchrun | slurm

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def port_from_job_id(job_id: str | int | None, base: int = 20000, span: int = 20000) -> int:
    """A TCP port in [base, base+span) that every task of one Slurm job computes alike."""
    digits = re.sub(r"\D", "", str(job_id or ""))
    return base + (int(digits) % span if digits else 9000)


def expand_nodelist(nodelist: str) -> list[str]:
    """Host names of a Slurm node list: ``scontrol show hostnames`` when present, else parsed.

    The parser covers the usual forms: ``n1``, ``n[01-03,07]``, ``a[1-2],b3``, ``r1-n[1-2]``.
    """
    scontrol = shutil.which("scontrol")
    if scontrol:
        try:
            res = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True,
                                 text=True, timeout=30, check=False)
            hosts = res.stdout.split()
            if res.returncode == 0 and hosts:
                return hosts
        except (OSError, subprocess.TimeoutExpired):
            pass
    return parse_nodelist(nodelist)


def parse_nodelist(nodelist: str) -> list[str]:
    hosts: list[str] = []
    for item in _split_top(nodelist.strip()):
        m = re.fullmatch(r"([^\[\]]*)\[([^\]]+)\]([^\[\]]*)", item)
        if not m:
            if item:
                hosts.append(item)
            continue
        prefix, ranges, suffix = m.groups()
        for part in ranges.split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                width = len(lo)
                hosts.extend(f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi) + 1))
            else:
                hosts.append(f"{prefix}{part}{suffix}")
    return hosts


def _split_top(text: str) -> list[str]:
    """Split at commas that are not inside brackets."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [s for s in out if s]


def detect_env(environ=None) -> DistEnv:
    """Where this process sits among its peers; a plain single process when nothing is set."""
    environ = os.environ if environ is None else environ
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return DistEnv(rank=int(environ["RANK"]), world_size=int(environ["WORLD_SIZE"]),
                       local_rank=int(environ.get("LOCAL_RANK", 0)),
                       master_addr=environ.get("MASTER_ADDR"),
                       master_port=int(environ["MASTER_PORT"]) if environ.get("MASTER_PORT")
                       else None, source="torchrun")
    if "SLURM_PROCID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1:
        nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST") or ""
        hosts = expand_nodelist(nodelist) if nodelist else []
        return DistEnv(rank=int(environ["SLURM_PROCID"]), world_size=int(environ["SLURM_NTASKS"]),
                       local_rank=int(environ.get("SLURM_LOCALID", 0)),
                       master_addr=environ.get("MASTER_ADDR") or (hosts[0] if hosts else
                                                                   "127.0.0.1"),
                       master_port=int(environ["MASTER_PORT"]) if environ.get("MASTER_PORT")
                       else port_from_job_id(environ.get("SLURM_JOB_ID")), source="slurm")
    return DistEnv()


def select_device(requested: str, env: DistEnv) -> torch.device:
    """``auto`` → the GPU of this local rank when CUDA is there, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        count = torch.cuda.device_count()
        return torch.device("cuda", env.local_rank % max(count, 1))
    return torch.device(requested)
