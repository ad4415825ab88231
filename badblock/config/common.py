"""Sections every stage shares: where data and outputs live, seeds, devices, the scanner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class RunConfig:
    data: str = "."  # input root (BADBLOCK_DATA); relative input paths are taken from here
    output: str = "badblock-output"  # output root (BADBLOCK_OUTPUT)
    seed: int = 0  # seed of every random choice: split, sampling, initial weights
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads; 0 = torch's default


@dataclass
class ScannerConfig:
    name: str = "mini"  # preset: mini | vision | mct | mmr
    # Dead blocks as "T:A" (transaxial block index, axial block index). Quote them in YAML:
    # unquoted 3:1 is the base-60 number 181 (rejected with a hint by physics.parse_blocks).
    dead_blocks: list[str] = field(default_factory=lambda: ["3:1"])
    dead_crystals: list[str] = field(default_factory=list)  # "crystal:ring"
    mask: str | None = None  # a precomputed mask .npy instead of dead_blocks
    # repair, evaluate and preprocess (paired kind) check the mask against the damaged scans'
    # counts and refuse one that contradicts them; false (--no-mask-check) uses it anyway
    mask_check: bool = True


__all__ = ["RunConfig", "ScannerConfig", "Literal"]
