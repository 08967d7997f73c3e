"""What a conversion does, layer by layer, and what it saves in bytes.

Size accounting (the same the packed export aims at): a binarized weight is
1 bit, its per-channel power-of-two scale is one int8 exponent per output
channel, everything else (full-precision layers, biases, BatchNorm
parameters and running statistics) stays fp32.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["ConversionReport", "LayerRow", "model_sizes"]

_IGNORED_BUFFERS = ("num_batches_tracked", "ede_t", "ede_k")


@dataclass
class LayerRow:
    """One conv/linear layer: what it is and what happens to it."""

    name: str
    type: str
    shape: list[int]
    params: int
    binarize: bool
    reason: str
    warning: str | None = None
    fix: str | None = None  # what the conversion did about a problem it found


@dataclass
class ConversionReport:
    """Rows for every conv/linear layer plus model-wide totals."""

    act_bits: int
    rows: list[LayerRow]
    blocks: list[str] = field(default_factory=list)
    total_params: int = 0
    binarized_params: int = 0
    fp32_bytes: int = 0
    packed_bytes: int = 0

    @property
    def compression(self) -> float:
        return self.fp32_bytes / self.packed_bytes if self.packed_bytes else math.inf

    @property
    def binarized_layers(self) -> int:
        return sum(r.binarize for r in self.rows)

    @property
    def warnings(self) -> list[str]:
        return [f"{r.name}: {r.warning}" for r in self.rows if r.warning]

    @property
    def fixes(self) -> list[str]:
        return [f"{r.name}: {r.fix}" for r in self.rows if r.fix]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["compression"] = round(self.compression, 3)
        out["binarized_layers"] = self.binarized_layers
        out["warnings"] = self.warnings
        out["fixes"] = self.fixes
        return out


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    state = {}
    for name, tensor in model.state_dict().items():
        if name.rsplit(".", 1)[-1] in _IGNORED_BUFFERS or not tensor.is_floating_point():
            continue
        state[name] = tensor
    return state


def model_sizes(model: nn.Module, binarized: set[str]) -> tuple[int, int, int, int]:
    """``(total_params, binarized_params, fp32_bytes, packed_bytes)``.

    ``binarized`` names the layers whose weight is (or will be) 1-bit.
    """
    state = _float_state(model)
    modules = dict(model.named_modules())
    binary_weights = {f"{n}.weight": modules[n] for n in binarized if n in modules}
    total = sum(p.numel() for p in model.parameters())
    n_bin = sum(int(modules[n].weight.numel()) for n in binarized if n in modules)
    fp32_bytes = 4 * sum(t.numel() for t in state.values())
    packed = 0
    for key, tensor in state.items():
        module = binary_weights.get(key)
        if module is None:
            packed += 4 * tensor.numel()
        else:  # bits, rounded up per layer, plus one int8 exponent per channel
            packed += math.ceil(tensor.numel() / 8) + tensor.shape[0]
    return total, n_bin, fp32_bytes, packed

