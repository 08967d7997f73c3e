"""The exponential moving average of a model's weights (recipe field ``ema``).

A copy of the model whose every floating-point tensor follows the trained
one as ``average = d * average + (1 - d) * weights`` after each optimizer step;
integer buffers are copied. The trainer evaluates, saves (``best.pt``, the
``model`` of ``last.pt``) and so exports the average, and keeps training the
raw weights (``train_model`` in ``last.pt``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from irconvert.config import EMAConfig

__all__ = ["WeightAverage"]


class WeightAverage:
    """The average of ``model``'s weights, starting from them now.

    Its :attr:`module` is an eval-mode copy of the model that never gets
    gradients; :meth:`update` after every optimizer step.
    """

    def __init__(self, model: nn.Module, config: EMAConfig) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup = config.decay, config.warmup
        self.updates = 0

    def current_decay(self) -> float:
        """The decay of the next update (ramped up over the first ones with ``warmup``)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        weight = 1.0 - self.current_decay()
        self.updates += 1
        trained = model.state_dict()
        for key, average in self.module.state_dict().items():
            value = trained[key]
            if average.is_floating_point():
                average.lerp_(value.to(average.dtype), weight)
            else:
                average.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict[str, Any], weights: dict[str, Any]) -> None:
        """Restore the average's ``weights`` (a state_dict) and its update count."""
        self.module.load_state_dict(weights)
        self.updates = int(state["updates"])
