"""Fine-tuning binarized models: recipe files, the training loop, evaluation.

Submodules are imported lazily by callers (``irconvert.train.trainer``...), so
importing this package stays cheap. The recipe dataclasses live in
:mod:`irconvert.config`; they are re-exported here for older imports.
"""

from irconvert.config import (
    DataConfig,
    DistillConfig,
    OptimizerConfig,
    ScheduleConfig,
    StageConfig,
    TrainConfig,
)
from irconvert.train.recipe import apply_overrides, load_recipe, recipe_from_dict

__all__ = [
    "DataConfig",
    "DistillConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "StageConfig",
    "TrainConfig",
    "apply_overrides",
    "load_recipe",
    "recipe_from_dict",
]
