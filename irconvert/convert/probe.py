"""Run one forward pass to learn what each layer really sees.

Used to find the accuracy trap of converting pretrained ReLU networks: a 1W/1A
conv whose inputs are all >= 0 (it follows a ReLU) binarizes every activation
to +1 and learns nothing. Looking at real tensors catches ReLU, ReLU6,
sigmoid gates and anything else non-negative, whatever the graph looks like.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["example_input_shape", "input_channels", "nonnegative_inputs"]


def example_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """The input shape (without batch) a model expects, when it can be told."""
    explicit = getattr(model, "irconvert_input_size", None)
    if explicit is not None:
        return tuple(explicit)
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        return tuple(cfg["input_size"])
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return (module.in_channels, 224, 224)
        if isinstance(module, nn.Linear):
            return (module.in_features,)
    return None


def _run_probe(model: nn.Module, shape: tuple[int, ...]) -> bool:
    """One eval-mode forward pass on a seeded random batch; False if it fails."""
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        gen = torch.Generator().manual_seed(0)
        x = torch.randn((2, *shape), generator=gen).to(device)
        model.eval()
        with torch.no_grad():
            model(x)
    except Exception:  # a model we cannot run on a guessed input: no verdict
        return False
    finally:
        model.train(was_training)
    return True


def input_channels(model: nn.Module, names: set[str]) -> dict[str, set[int]]:
    """The channel counts (dim 1) each module of ``names`` is called with, per call."""
    shape = example_input_shape(model)
    seen: dict[str, set[int]] = {}
    if shape is None or not names:
        return seen
    modules = dict(model.named_modules())

    def hook(name: str) -> Any:
        def record(_: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.dim() >= 2:
                seen.setdefault(name, set()).add(int(x.shape[1]))
        return record

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names if n in modules]
    try:
        ok = _run_probe(model, shape)
    finally:
        for handle in handles:
            handle.remove()
    return seen if ok else {}


def nonnegative_inputs(model: nn.Module, names: set[str]) -> set[str] | None:
    """Which of ``names`` received only inputs >= 0 on a random normal batch.

    Returns None when the model cannot be run on a guessed input shape.
    """
    shape = example_input_shape(model)
    if shape is None or not names:
        return None if shape is None else set()
    found: set[str] = set()
    modules = dict(model.named_modules())

    def hook(name: str) -> Any:
        def record(_: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.numel() and bool((x >= 0).all()):
                found.add(name)
        return record

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names if n in modules]
    try:
        ok = _run_probe(model, shape)
    finally:
        for handle in handles:
            handle.remove()
    return found if ok else None
