"""Fine-tuning binarized models: recipes, the training loop, evaluation.

Submodules are imported lazily by callers (``irconvert.train.trainer``...), so
importing this package stays cheap.
"""

from irconvert.train.recipe import (
                                    DataConfig,
                                    DistillConfig,
                                    OptimizerConfig,
                                    ScheduleConfig,
                                    TrainConfig,
                                    apply_overrides,
                                    load_recipe,
                                    recipe_from_dict,
)

__all__ = [
    "DataConfig",
    "DistillConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "load_recipe",
    "recipe_from_dict",
]
