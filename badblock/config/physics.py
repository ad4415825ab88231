"""Sections of the physics stages: simulation and masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class SimulateConfig:
    scans: int = 4  # number of scans to simulate
    counts: float = 2.0e6  # expected prompts per scan (sets the Poisson noise level)
    phantom: Literal["random", "file"] = "random"
    activity: str | None = None  # a user's activity volume .npy [z, y, x] when phantom=file
    attenuation: bool = True
    tof_fwhm_ps: float = 0.0  # 0 = the preset's own timing resolution
    format: Literal["interfile", "e7", "flat"] = "interfile"
    dtype: Literal["uint16", "float32"] = "uint16"
    seed: int = 0
