"""``digits_cnn``: the small full-precision CNN of ``irconvert demo`` (8x8 grayscale digits)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DigitsCNN", "digits_cnn"]


class _Block(nn.Module):
    """conv-bn with a shortcut around it (Bi-Real style), then Hardtanh.

    Binary networks keep far more accuracy with a shortcut around every
    convolution; with Hardtanh the inputs of each conv are signed, so 1-bit
    activations carry information.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.stride, self.expand = stride, cout // cin

    def forward(self, x: Tensor) -> Tensor:
        short = nn.functional.avg_pool2d(x, self.stride) if self.stride > 1 else x
        if self.expand > 1:
            short = torch.cat([short] * self.expand, dim=1)
        return nn.functional.hardtanh(self.bn(self.conv(x)) + short)


class DigitsCNN(nn.Module):
    """stem (fp32) -> 4 residual conv blocks -> pool -> BN1d -> linear (fp32)."""

    irconvert_input_size = (1, 8, 8)

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(width)
        self.blocks = nn.Sequential(
            _Block(width, width), _Block(width, width),
            _Block(width, 2 * width, stride=2), _Block(2 * width, 2 * width),
        )
        self.bn_fc = nn.BatchNorm1d(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.hardtanh(self.bn0(self.stem(x)))
        x = self.blocks(x)
        return self.fc(self.bn_fc(x.mean((2, 3))))


def digits_cnn(num_classes: int = 10) -> DigitsCNN:
    return DigitsCNN(num_classes)
