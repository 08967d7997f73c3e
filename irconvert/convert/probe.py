"""Run one forward pass to learn what each layer really sees.

Used to find the accuracy trap of converting pretrained ReLU networks: a 1W/1A
conv whose inputs are all >= 0 (it follows a ReLU) binarizes every activation
to +1 and learns nothing. Looking at real tensors catches ReLU, ReLU6,
sigmoid gates and anything else non-negative, whatever the graph looks like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from irconvert.nn.thresholds import balanced_threshold

__all__ = ["LayerProbe", "channel_dim_of", "example_input_shape", "input_channels",
           "probe_layers"]


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


@dataclass
class LayerProbe:
    """What one forward pass showed about the layers asked about.

    Attributes:
        called: the layers the forward pass called. A conv/linear layer that
            is never called while the model still runs is one whose weight
            the model reads directly (``F.linear(x, self.qkv.weight)``, as
            attention blocks often do) or one unused at inference.
        one_signed: per called layer, ``(channels whose inputs all had one
            sign, channels)``; only layers with at least one such channel.
            In 1W/1A every bit of such a channel is the same: it carries no
            information, and a layer made of them outputs a constant that
            the BatchNorm after it divides by ~sqrt(eps).
    """

    called: set[str] = field(default_factory=set)
    one_signed: dict[str, tuple[int, int]] = field(default_factory=dict)
    # for mostly one-signed layers: the per-channel threshold balancing the
    # bits of what the probe fed them (a start; training data refines it)
    thresholds: dict[str, torch.Tensor] = field(default_factory=dict)

    def mostly_one_signed(self, name: str) -> bool:
        """At least half of the layer's input channels have one sign (a ReLU-fed layer)."""
        count, channels = self.one_signed.get(name, (0, 1))
        return 2 * count >= channels


def channel_dim_of(module: nn.Module) -> int:
    """Where a layer's input keeps its channels: last for linear layers, 1 otherwise."""
    return -1 if isinstance(module, nn.Linear) else 1


def _one_signed_channels(x: torch.Tensor, dim: int) -> int:
    """Channels of ``x`` (along ``dim``) whose values are all >= 0 or all < 0."""
    flat = x.detach().movedim(dim, 0).reshape(x.shape[dim], -1)
    nonneg = (flat >= 0).all(dim=1)
    neg = (flat < 0).all(dim=1)
    return int((nonneg | neg).sum())


def probe_layers(model: nn.Module, names: set[str], *, signs: bool = True,
                 thresholds: bool = True) -> LayerProbe | None:
    """One eval-mode forward pass on a random normal batch, watching ``names``.

    ``signs``: count one-signed input channels (1W/1A needs them);
    ``thresholds``: also compute balancing thresholds for mostly one-signed
    layers. Without either, only which layers were called is recorded.

    Returns None when the model cannot be run on a guessed input shape.
    """
    result = LayerProbe()
    modules = dict(model.named_modules())

    def look(name: str, x: torch.Tensor) -> None:
        result.called.add(name)
        if not signs or x.dim() < 2 or not x.numel() or not x.is_floating_point():
            return
        dim = channel_dim_of(modules[name])
        count = _one_signed_channels(x, dim)
        if count:
            result.one_signed[name] = (count, int(x.shape[dim]))
        if thresholds and result.mostly_one_signed(name):
            result.thresholds[name] = balanced_threshold(x, dim)

    if not names:
        return None if example_input_shape(model) is None else result
    return result if _probe_inputs(model, names, look) else None
