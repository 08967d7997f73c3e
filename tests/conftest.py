"""Shared fixtures: where the shared data lives, tiny models, determinism."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IRCONVERT_SHARED_DATA", REPO.parent / "shared" / "data"))
CIFAR10 = SHARED_DATA / "cifar10"
WEIGHTS = SHARED_DATA / "weights"
RESNET20 = WEIGHTS / "resnet20-12fca82f.th"


def need_shared(path: Path) -> Path:
    """Skip the calling test, with a reason, when shared data is absent."""
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set IRCONVERT_SHARED_DATA)")
    return path


@pytest.fixture
def resnet20_weights() -> Path:
    return need_shared(RESNET20)


@pytest.fixture
def cifar10_root() -> Path:
    return need_shared(CIFAR10)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class TinyNet(nn.Module):
    """stem conv -> 2 binarizable convs -> pool -> classifier."""

    irconvert_input_size = (3, 8, 8)

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.hardtanh(self.bn0(self.stem(x)))
        x = torch.nn.functional.hardtanh(self.bn1(self.conv1(x)))
        x = torch.nn.functional.hardtanh(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def tiny_net() -> TinyNet:
    return TinyNet()
