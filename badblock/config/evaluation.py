"""Sections of repair, evaluation and the demo."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RepairConfig:
    checkpoint: str | None = None
    batch_size: int = 32
    force: bool = False  # allow writing over the input


@dataclass
class EvaluateConfig:
    baselines: list[str] = None  # type: ignore[assignment]
    fbp: bool = True
    tune_widths: bool = True

    def __post_init__(self):
        if self.baselines is None:
            self.baselines = ["none", "divide", "interp", "biharmonic", "normconv"]


@dataclass
class DemoConfig:
    train_scans: int = 6
    test_scans: int = 2
    test_blocks: list[str] = None  # type: ignore[assignment]

    def __post_init__(self):
        if self.test_blocks is None:
            self.test_blocks = ["5:1"]
