"""The one table that maps float layer types to their IR-Net replacements.

Pass your own mapping (``{**DEFAULT_LAYER_MAP, MyConv: MyIRConv}``) to
:func:`irconvert.binarize_` to extend it. A replacement class needs a
``from_float(module, *, binary_act)`` classmethod.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from irconvert.nn import IRConv2d, IRLinear

__all__ = ["DEFAULT_LAYER_MAP", "LayerMap", "is_candidate"]

LayerMap = Mapping[type[nn.Module], Any]

DEFAULT_LAYER_MAP: LayerMap = {
    nn.Conv2d: IRConv2d,
    nn.Linear: IRLinear,
}

# Layers shown in reports even when the table cannot replace them, so a user
# sees that (and why) they stay in full precision.
_REPORTED_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
    nn.ConvTranspose3d, nn.Linear,
)


def is_candidate(module: nn.Module, layer_map: LayerMap) -> bool:
    """Whether ``module`` is a conv/linear layer that belongs in a report."""
    return isinstance(module, _REPORTED_TYPES) or type(module) in layer_map
