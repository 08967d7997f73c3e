"""Run one forward pass to learn what each layer really sees.

Used to find the accuracy trap of converting pretrained ReLU networks: a 1W/1A
conv whose inputs are all >= 0 (it follows a ReLU) binarizes every activation
to +1 and learns nothing. Looking at real tensors catches ReLU, ReLU6,
sigmoid gates and anything else non-negative, whatever the graph looks like.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _probe_inputs(model: nn.Module, names: set[str],
                  look: Callable[[str, torch.Tensor], None]) -> bool | None:
    """Run the probe, calling ``look(name, input)`` on each named module's first input.

    Returns whether the probe ran (None: no input shape could be guessed).
    """
    shape = example_input_shape(model)
    if shape is None:
        return None
    modules = dict(model.named_modules())

    def hook(name: str) -> Any:
        def record(_: nn.Module, args: tuple[Any, ...]) -> None:
            if args and isinstance(args[0], torch.Tensor):
                look(name, args[0])
        return record

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names if n in modules]
    try:
        return _run_probe(model, shape)
    finally:
        for handle in handles:
            handle.remove()


def input_channels(model: nn.Module, names: set[str]) -> dict[str, set[int]]:
    """The channel counts (dim 1) each module of ``names`` is called with, per call."""
    seen: dict[str, set[int]] = {}

    def look(name: str, x: torch.Tensor) -> None:
        if x.dim() >= 2:
            seen.setdefault(name, set()).add(int(x.shape[1]))

    return seen if names and _probe_inputs(model, names, look) else {}


def nonnegative_inputs(model: nn.Module, names: set[str]) -> set[str] | None:
    """Which of ``names`` received only inputs >= 0 on a random normal batch.

    Returns None when the model cannot be run on a guessed input shape.
    """
    found: set[str] = set()

    def look(name: str, x: torch.Tensor) -> None:
        if x.numel() and bool((x >= 0).all()):
            found.add(name)

    if not names:
        return None if example_input_shape(model) is None else set()
    return found if _probe_inputs(model, names, look) else None
