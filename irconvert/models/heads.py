"""The two ends of a model: its stem and classifier, their sizes, replacing the classifier.

timm's ``pretrained_cfg`` names the stem (``first_conv``) and the classifier;
for other models they are found structurally (first conv, last linear).
Conversion uses them to keep both ends in full precision; the registry and
the trainer use them to give a model a new class count.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from irconvert.errors import LoadError

__all__ = ["find_classifier", "find_stem", "model_channels", "model_outputs",
           "replace_classifier_"]


def _cfg_names(model: nn.Module, key: str) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if not isinstance(cfg, dict) or not cfg.get(key):
        return []
    value = cfg[key]
    return [value] if isinstance(value, str) else list(value)


def _resolve(model: nn.Module, names: Iterable[str]) -> set[str]:
    """Module names from a timm cfg; a name may point at a container (``stem``)."""
    modules = dict(model.named_modules())
    found: set[str] = set()
    for name in names:
        module = modules.get(name)
        if module is None:
            continue
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            found.add(name)
        else:  # a container: its first (stem) or last (head) layer is meant
            inner = [f"{name}.{n}" for n, m in module.named_modules()
                     if isinstance(m, (nn.Conv2d, nn.Linear))]
            if inner:
                found.add(inner[0] if "conv" in name or "stem" in name else inner[-1])
    return found


def find_stem(model: nn.Module) -> set[str]:
    """Dotted names of the stem convolution(s)."""
    named = _resolve(model, _cfg_names(model, "first_conv"))
    if named:
        return named
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return {name}
    return set()


def find_classifier(model: nn.Module) -> set[str]:
    """Dotted names of the classifier layer(s)."""
    names = _cfg_names(model, "classifier")
    named = _resolve(model, names)
    if named:
        return named
    modules = dict(model.named_modules())
    if names and all(n in modules for n in names):
        # timm with num_classes=0: the head is an Identity, there is no
        # classifier; the last backbone layer is not one.
        return set()
    last_linear = last_conv = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_linear = name
        elif isinstance(module, nn.Conv2d):
            last_conv = name
    last = last_linear if last_linear is not None else last_conv
    return {last} if last is not None else set()


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
