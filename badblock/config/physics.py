"""Sections of the physics stages: simulation and masks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Family = Literal["random", "textured", "lesions", "vessels", "file"]


@dataclass
class SimulateConfig:
    scans: int = 4  # number of scans to simulate
    counts: float = 2.0e6  # expected prompts per scan (sets the Poisson noise level)
    # [lo, hi]: scan i's expected prompts are counts x a factor, log-uniform in [lo, hi] and
    # stratified: each of the run's scans in its own equal slice of the log range (seeded) --
    # training data covering many doses; empty: every scan at counts.
    counts_range: list[float] = field(default_factory=list)
    # random: physics.phantom.random_phantom; textured, lesions, vessels: the activity families
    # of physics.families; file: a user's activity volume. A list of families: the run's scans
    # in equal shares of them (a seeded permutation, as counts_range's strata): a mixed training
    # set; phantom_params then maps a family name to its parameters.
    phantom: Family | list[Family] = "random"
    phantom_params: dict = field(default_factory=dict)  # the family's parameters (families.py)
    activity: str | None = None  # a user's activity volume .npy [z, y, x] when phantom=file
    attenuation: bool = True  # water body outline, exp(-integral of mu) per LOR
    tof_fwhm_ps: float = 0.0  # 0 = the preset's own timing resolution
    format: Literal["interfile", "e7", "flat"] = "interfile"  # file format of the written scans
    dtype: Literal["uint16", "float32"] = "uint16"  # prompts; the truth is always float32
    seed: int = 0  # scan i depends only on (seed, i): same seed, same bytes
    step_mm: float = 0.0  # sample spacing along each LOR; 0 = one transaxial voxel (bin size)
    # exact: every LOR (physics.projector), damage LOR by LOR; fast: physics.fastproj (torch, on
    # a GPU when there is one), damage as binomial thinning of the bins (expectation x (1 - f));
    # auto: exact for scanners of at most 5 million LORs (mini), fast for the clinical ones.
    projector: Literal["auto", "exact", "fast"] = "auto"
    chunk_mb: float = 256.0  # memory for one chunk of views/planes being projected or written
    # Also write damaged/ copies with the LORs through these dead crystals removed ("T:A").
    dead_blocks: list[str] = field(default_factory=list)
    dead_crystals: list[str] = field(default_factory=list)  # "crystal:ring"


@dataclass
class DetectConfig:
    # Evidence a verdict needs, in standard deviations of the deadness estimate: a candidate
    # is decided only when 1/2 lies z of them from both "alive" (0) and "dead" (1).
    z: float = 5.0
    crystals: bool = True  # also search single dead crystals outside the dead blocks

    def __post_init__(self):
        if not self.z > 0:
            raise ValueError(f"z must be positive, not {self.z}")
