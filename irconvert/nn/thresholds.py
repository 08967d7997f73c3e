"""Data-initialised activation thresholds: every channel's bits start balanced.

A binary activation carries information only if its sign varies. After a
ReLU, or in a channel whose values sit mostly on one side of zero, nearly
every bit is the same: the binary conv then outputs a near-constant, and
the BatchNorm after it divides by a near-zero spread (the gradient explodes).
Setting each channel's threshold to the median of its real inputs makes
half of that channel's bits +1 and half -1 on the calibration data.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from irconvert.nn.layers import IRLayer

__all__ = ["balanced_threshold", "init_act_thresholds"]


def balanced_threshold(x: Tensor, channel_dim: int = 1) -> Tensor:
    """Per-channel threshold that splits ``x`` closest to half +1, half -1.

    Channels are ``x``'s dim ``channel_dim`` (1 for a convolution's NCHW
    input, -1 for a linear layer's ``(N, ..., C)``).

    The median, unless many values equal it (a ReLU channel that is zero
    more than half the time): ``sign(0) = +1`` would then make every zero a
    +1, so the threshold moves just above the median value when that
    splits the channel more evenly.
    """
    c = x.shape[channel_dim]
    flat = x.detach().float().movedim(channel_dim, 0).reshape(c, -1)
    median = flat.median(dim=1).values
    above = torch.nextafter(median, torch.full_like(median, float("inf")))
    at_or_above = (flat >= median[:, None]).float().mean(1)
    strictly_above = (flat > median[:, None]).float().mean(1)
    nudge = (strictly_above - 0.5).abs() < (at_or_above - 0.5).abs()
    return torch.where(nudge, above, median)


@torch.no_grad()
def init_act_thresholds(model: nn.Module, batches: Iterable[Any], steps: int,
                        device: torch.device | None = None,
                        only: Collection[nn.Module] | None = None) -> int:
    """Set each layer's ``act_threshold`` to the median of its inputs.

    Runs ``steps`` batches in train mode (batch statistics, so stale
    BatchNorm running statistics do not matter). Layers are set in forward
    order *during* the pass: a layer's threshold is fixed before the layers
    after it see its output, so each median describes the inputs the layer
    will really get. The medians of the batches are averaged.

    ``only`` limits the layers set to those given (default: every layer
    with a threshold).

    Returns:
        The number of layers set (0 when no layer has a threshold).
    """
    layers: dict[nn.Module, list[Tensor]] = {
        m: [] for m in model.modules()
        if isinstance(m, IRLayer) and m.act_threshold is not None
        and (only is None or m in only)}
    if not layers or steps <= 0:
        return 0

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        seen = layers[module]
        seen.append(balanced_threshold(args[0], module.channel_dim))  # type: ignore[arg-type]
        threshold: Tensor = module.act_threshold  # type: ignore[assignment]
        threshold.copy_(torch.stack(seen).mean(0))

    handles = [m.register_forward_pre_hook(pre_hook) for m in layers]
    was_training = model.training
    model.train()
    # Running statistics updated here are re-estimated afterwards anyway,
    # but keep them as they were: this pass only measures.
    # Copied back in place, not through load_state_dict: a partial state dict
    # lacks the version metadata some modules' loaders require (torchvision's
    # MNASNet raises without it).
    saved = [(b, b.clone()) for n, b in model.named_buffers() if "running" in n
             or n.endswith("num_batches_tracked")]
    try:
        for used, batch in enumerate(batches):
            if used >= steps:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(inputs.to(device) if device is not None else inputs)
    finally:
        for h in handles:
            h.remove()
        for buffer, value in saved:
            buffer.copy_(value)
        model.train(was_training)
    return len(layers)
