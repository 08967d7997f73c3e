"""Re-estimate BatchNorm statistics after binarization.

A pretrained network's BatchNorm running statistics describe the outputs of
its *float* layers. Right after conversion the binarized layers produce
differently scaled outputs, so the stale statistics can blow activations up
(a freshly converted ResNet-20 evaluates at chance, with a loss of ~1e5).
A few forward passes in train mode with a cumulative average fix that before
fine-tuning starts; no weight changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["recalibrate_bn"]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Any], steps: int,
                   device: torch.device | None = None) -> int:
    """Recompute every BatchNorm's running mean/var over ``steps`` input batches.

    Args:
        model: the (binarized) model; its train/eval mode is restored afterwards.
        batches: yields inputs or ``(inputs, targets)`` pairs.
        steps: how many batches to use (the exact average over them is kept).
        device: where to move inputs (default: stay where they are).

    Returns:
        The number of batches used (0 when the model has no BatchNorm).
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms or steps <= 0:
        return 0
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch weighs the same
    model.train()
    used = 0
    try:
        for batch in batches:
            if used >= steps:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(inputs.to(device) if device is not None else inputs)
            used += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return used
