"""The whole configuration: one typed section per stage.

Use :func:`load_config` to apply defaults < YAML file (or preset) < environment < ``--set``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from badblock.config.cluster import LaunchConfig
from badblock.config.common import RunConfig, ScannerConfig
from badblock.config.evaluation import DemoConfig, EvaluateConfig, RepairConfig
from badblock.config.loader import build, from_dict, layered, presets, to_dict
from badblock.config.physics import DetectConfig, SimulateConfig
from badblock.config.preprocess import PreprocessConfig
from badblock.config.training import (
    AugmentConfig,
    DataConfig,
    FillsConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from badblock.utils.atomic import atomic_write_text

RESOLVED_NAME = "config.resolved.yaml"


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    scanner: ScannerConfig = field(default_factory=ScannerConfig)
    simulate: SimulateConfig = field(default_factory=SimulateConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    data: DataConfig = field(default_factory=DataConfig)
    fills: FillsConfig = field(default_factory=FillsConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    repair: RepairConfig = field(default_factory=RepairConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def output_path(self, *parts: str | os.PathLike) -> Path:
        """A path under ``run.output``; absolute parts are kept as they are."""
        return Path(self.run.output).joinpath(*parts)

    def data_path(self, part: str | os.PathLike) -> Path:
        """An input path: absolute, or relative to ``run.data``."""
        return Path(self.run.data).joinpath(part)


def load_config(config: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                env: Mapping[str, str] | None = None) -> Config:
    """Defaults < ``config`` (file or preset name; else ``$BADBLOCK_CONFIG``) < env < overrides."""
    return build(Config, layered(config, overrides, env, schema=Config))


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_resolved(cfg: Config, folder: str | os.PathLike) -> Path:
    """Write the resolved config next to a stage's outputs so the run can be repeated."""
    path = Path(folder) / RESOLVED_NAME
    atomic_write_text(path, config_to_yaml(cfg))
    return path


def config_from_dict(data: Mapping, where: str = "config") -> Config:
    return from_dict(Config, data, where)


__all__ = ["Config", "load_config", "save_resolved", "config_to_yaml", "config_from_dict",
           "presets", "RESOLVED_NAME"]
