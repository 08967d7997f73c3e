"""Learnable activations for binary networks (ReActNet, Liu et al., ECCV 2020).

``RPReLU`` shifts the input and output of a PReLU by learnt per-channel
amounts: ``y = prelu(x - gamma_c, slope_c) + zeta_c``. In a Bi-Real/IR-Net
block it replaces Hardtanh after the residual sum, so each channel can move
the distribution the next sign sees (and its own zero point) instead of
being clipped to [-1, 1]. The learnable threshold in front of each sign
(RSign) lives in the IR-Net layers themselves (``act_threshold``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RPReLU"]


class RPReLU(nn.Module):
    """``prelu(x - shift_in, slope) + shift_out``, all per channel (dim 1).

    Args:
        channels: number of channels.
        slope: initial negative slope (ReActNet: 0.25).
    """

    def __init__(self, channels: int, slope: float = 0.25) -> None:
        super().__init__()
        self.channels = channels
        self.shift_in = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), float(slope)))
        self.shift_out = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        dtype = x.dtype
        y = F.prelu(x - self.shift_in.to(dtype).view(shape), self.slope.to(dtype))
        return y + self.shift_out.to(dtype).view(shape)

    def extra_repr(self) -> str:
        return f"{self.channels}"
