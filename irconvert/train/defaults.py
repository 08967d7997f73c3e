"""The recipe ``binarize`` uses when it is given none.

The shipped recipes live inside the package (``irconvert/recipes``, also
reachable as ``recipes/`` in a checkout), so an installed irconvert finds
them. A recognised CIFAR ResNet gets the measured fine-tuning recipe of its
mode (docs/benchmarks.md), the authors' ``irnet_resnet`` their from-scratch
1W/1A recipe; anything else gets the generic defaults of
:class:`~irconvert.config.TrainConfig`.
"""

from __future__ import annotations

from pathlib import Path

from irconvert.config import TrainConfig
from irconvert.config.recipe_file import SHIPPED_RECIPES, load_recipe

__all__ = ["RECIPES_DIR", "default_recipe", "default_recipe_path"]

RECIPES_DIR = SHIPPED_RECIPES

# arch prefix -> recipe file stem, per mode (act_bits)
_DEFAULTS: dict[str, dict[int, str]] = {
    "cifar_resnet": {1: "cifar10-resnet20-finetune-1w1a", 32: "cifar10-resnet20-finetune-1w32a"},
    # the authors' network has no pretrained weights: their from-scratch recipe
    "irnet_resnet": {1: "cifar10-resnet20-1w1a"},
}


def default_recipe_path(arch: str | None, act_bits: int) -> Path | None:
    """The shipped recipe for ``arch`` in mode ``act_bits``, or None.

    The CIFAR recipe suits every depth of the option-A CIFAR ResNets (20 to
    56: same stages, same data); ``cifar_resnet18`` is a different network.
    """
    if not arch or arch == "cifar_resnet18":
        return None
    for prefix, by_mode in _DEFAULTS.items():
        if arch.startswith(prefix) and act_bits in by_mode:
            return RECIPES_DIR / f"{by_mode[act_bits]}.yaml"
    return None


def default_recipe(arch: str | None, act_bits: int) -> tuple[TrainConfig, Path | None]:
    """The recipe to use without ``--recipe``, and the file it came from (None: built-in)."""
    path = default_recipe_path(arch, act_bits)
    if path is None or not path.is_file():
        return TrainConfig(), None
    return load_recipe(path), path
