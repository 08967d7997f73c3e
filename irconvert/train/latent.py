"""Constraints on the latent weights of binarized layers (recipe section ``latent``).

Libra-PB standardizes each filter before its sign, so the binary weights
are the same for ``w`` and ``a * w + b`` (per filter, ``a > 0``). An optimizer
step is not: Adam moves each weight by about ``lr`` whatever its scale, so a
filter's spread is its effective learning rate. These constraints act on
that freedom without touching what the forward pass computes (``standardize``)
or by bounding how far past zero a weight may go (``clip``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from irconvert.config.training import LatentConfig
from irconvert.functional import standardize
from irconvert.nn import IRLayer

__all__ = ["constrain_latent_"]


def _clip_filters_(w: Tensor, clip: float) -> None:
    """Clamp ``w`` in place to ``mean +- clip * std`` of each filter (dim 0)."""
    dims = tuple(range(1, w.dim()))
    mean = w.mean(dim=dims, keepdim=True)
    spread = w.std(dim=dims, keepdim=True) * clip
    torch.clamp_(w, min=mean - spread, max=mean + spread)


@torch.no_grad()
def constrain_latent_(model: nn.Module, config: LatentConfig) -> int:
    """Apply ``config`` to every IR-Net layer of ``model`` whose weights are binary now.

    Returns how many layers it changed (0 when the section is off).
    """
    if not config.active:
        return 0
    changed = 0
    for module in model.modules():
        if not isinstance(module, IRLayer) or not module.weights_on:
            continue
        weight: Tensor = module.weight  # type: ignore[attr-defined,assignment]
        if config.standardize:
            weight.copy_(standardize(weight))
        if config.clip is not None:
            _clip_filters_(weight, config.clip)
        changed += 1
    return changed
