"""Sections of repair, evaluation and the demo."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RepairConfig:
    checkpoint: str | None = None  # the trained network (--checkpoint)
    batch_size: int = 32  # plane stacks per network call
    force: bool = False  # replace an existing output (never the input itself)
    output: str = "repaired"  # default output folder, relative to run.output
    # Send every plane through the network, not only those the mask touches (benchmarks only:
    # the untouched planes are copied back unchanged anyway).
    all_planes: bool = False
    # Before repairing, estimate from the scan's own counts how far to trust the network's
    # correction of its prior, on partly damaged and on fully dead bins: the scan's damage
    # rotated around the ring is laid on the scan and its counts score prior and network
    # (badblock.inference.selfcheck). Needs the dead blocks (--scanner/--dead-blocks or auto).
    self_check: bool = True


@dataclass
class EvaluateConfig:
    # Classical repairs scored next to the network (badblock.baselines); default: all of them.
    baselines: list[str] = None  # type: ignore[assignment]
    fbp: bool = True  # image-domain scores: FBP of the affected direct planes
    tune_widths: bool = True  # tune the normconv widths on validation scans when given
    # Fixed normconv sigmas (planes, views, bins); empty = tune (or the defaults 1, 1, 1.5).
    widths: list[float] = field(default_factory=list)
    seed: int = 0  # thinning complete scans into damaged ones when none are given
    output: str = "evaluate"  # output folder, relative to run.output
    label: str = "unet"  # method name of the repairs given with --repaired
    # Baselines work on counts per real LOR of the scanner (gap-crystal bins hold none).
    sensitivity: bool = True

    def __post_init__(self):
        if self.baselines is None:
            self.baselines = ["none", "divide", "interp", "biharmonic", "normconv"]


@dataclass
class DemoConfig:
    train_scans: int = 6  # simulated scans to train on (the store holds some out for validation)
    test_scans: int = 2  # separate test scans: other phantoms, never seen in training
    # Dead blocks of the test scans ("T:A"): a position never used in training.
    test_blocks: list[str] = field(default_factory=lambda: ["5:1"])
    also_truth: bool = False  # also train a network against the noiseless truth and compare
