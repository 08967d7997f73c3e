"""The classifier end of a model: its size, its input channels, replacing it."""

from __future__ import annotations

from torch import nn

from irconvert.convert.select import find_classifier
from irconvert.errors import LoadError

__all__ = ["model_channels", "model_outputs", "replace_classifier_"]


def model_outputs(model: nn.Module) -> int | None:
    """Size of the classifier's output, when there is a recognisable one."""
    for name in sorted(find_classifier(model)):
        layer = model.get_submodule(name)
        for attr in ("out_features", "out_channels"):
            if isinstance(getattr(layer, attr, None), int):
                return int(getattr(layer, attr))
    return None


def model_channels(model: nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return 3


def replace_classifier_(model: nn.Module, num_classes: int) -> list[str]:
    """Give ``model`` a freshly initialised classifier with ``num_classes`` outputs."""
    changed = []
    for name in sorted(find_classifier(model)):
        old = model.get_submodule(name)
        new: nn.Module
        if isinstance(old, nn.Linear):
            new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        elif isinstance(old, nn.Conv2d):
            new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size,  # type: ignore[arg-type]
                            old.stride, old.padding,  # type: ignore[arg-type]
                            bias=old.bias is not None)
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        changed.append(name)
    if not changed:
        raise LoadError("replacing the classifier: no linear or conv classifier found in the model")
    return changed
