"""Section of the Slurm / submitit launcher."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class LaunchConfig:
    cluster: Literal["slurm", "local", "debug"] = "slurm"
    folder: str = "launch"  # submitit logs, relative to run.output
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: float = 0.0  # 0 = the partition's default
    partition: str | None = None
    time_min: int = 60
    signal_delay_s: int = 90
    max_requeue: int = 3
    container_image: str | None = None  # pyxis: srun --container-image
    container_mounts: list[str] = field(default_factory=list)
    srun_args: list[str] = field(default_factory=list)
