"""Section of the Slurm / submitit launcher (``badblock launch``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class LaunchConfig:
    # Named explicitly: submitit's own default picks slurm whenever `srun` is installed.
    cluster: Literal["slurm", "local", "debug"] = "slurm"
    folder: str = "launch"  # submitit's pickles and logs, relative to run.output
    nodes: int = 1  # Slurm nodes
    gpus_per_node: int = 0  # GPUs per node; also the tasks per node unless tasks_per_node is set
    tasks_per_node: int = 0  # 0 = one task per GPU (gpus_per_node), or 1 without GPUs
    cpus_per_task: int = 2  # CPUs Slurm gives each task
    mem_gb: float = 0.0  # 0 = the partition's default
    partition: str | None = None  # Slurm partition; None = the cluster's default
    time_min: int = 60  # time limit of one run of the job, minutes
    signal_delay_s: int = 90  # USR2 this many seconds before the time limit
    max_requeue: int = 3  # time-outs after which the job is not requeued again
    job_name: str = ""  # empty = badblock-<stage>
    python: str | None = None  # python on the compute nodes / in the container; None = this one
    container_image: str | None = None  # pyxis: srun --container-image
    # pyxis: srun --container-mounts (SRC:DST[:ro]); run.output and run.data are added at their
    # own paths, so that the job's files are where the submitting side wrote them.
    container_mounts: list[str] = field(default_factory=list)
    srun_args: list[str] = field(default_factory=list)  # more srun options
    setup: list[str] = field(default_factory=list)  # shell lines run before srun (module load ...)
