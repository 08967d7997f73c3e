"""Every configuration dataclass a recipe, a checkpoint or an exported file holds.

* :mod:`irconvert.config.base`: the one validation mechanism (:class:`Section`:
  fields checked from their type hints, rules between fields, one-line
  ``field 'x.y' must be ..., got ...`` errors, dict round trips);
* :mod:`irconvert.config.binarize`: :class:`BinarizeConfig`, :class:`EDEConfig`;
* :mod:`irconvert.config.training`: :class:`TrainConfig` and its sections.

Reading and writing recipe files is :mod:`irconvert.config.recipe_file`'s job.
"""

from irconvert.config.base import FieldError, Section, config_from_dict
from irconvert.config.binarize import BinarizeConfig, EDEConfig
from irconvert.config.training import (
    DataConfig,
    DistillConfig,
    EMAConfig,
    LatentConfig,
    OptimizerConfig,
    ScheduleConfig,
    StageConfig,
    TrainConfig,
)

__all__ = [
    "BinarizeConfig",
    "DataConfig",
    "DistillConfig",
    "EDEConfig",
    "EMAConfig",
    "FieldError",
    "LatentConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "Section",
    "StageConfig",
    "TrainConfig",
    "config_from_dict",
]
