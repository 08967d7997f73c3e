"""The paper's CIFAR architectures, in full precision.

- ``cifar_resnet20/32/44/56``: He et al. (2016) CIFAR ResNets with the
  parameter-free "option A" shortcut; keys match the widely used pretrained
  weights (``conv1``, ``bn1``, ``layerN.i.conv1`` ..., ``linear``).
- ``irnet_resnet20/32/44/56``: the same networks with the IR-Net authors'
  head, a BatchNorm1d before the classifier (their ``bn2``): the network
  their 1W/1A CIFAR-10 results come from, for training from scratch (their
  1W/32A script differs again and is not built in).
- ``cifar_resnet18``: the 4-stage ResNet-18 for 32x32 inputs with 1x1
  projection shortcuts (``shortcut.0``/``shortcut.1``).
- ``vgg_small``: the VGG-Small of the binary-network papers (LQ-Nets,
  IR-Net), with Hardtanh as in the authors' code.

Each block keeps its activations as modules (``act1``, ``act2``) and a
``bireal`` flag so the block transforms can switch a block to the IR-Net
form (Hardtanh, a shortcut around every conv) without touching its weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irconvert.errors import ConfigError

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "OptionAShortcut",
    "VGGSmall",
    "cifar_resnet",
    "cifar_resnet18",
    "vgg_small",
]

CIFAR_INPUT_SIZE = (3, 32, 32)


class OptionAShortcut(nn.Module):
    """Parameter-free downsampling: subsample by 2, zero-pad channels."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """Two 3x3 convs; ``bireal`` adds a shortcut around each (IR-Net form)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, option: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act1: nn.Module = nn.ReLU(inplace=True)
        self.act2: nn.Module = nn.ReLU(inplace=True)
        self.bireal = False
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if option == "A":
                self.shortcut = OptionAShortcut(planes)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )

    def forward(self, x: Tensor) -> Tensor:
        if self.bireal:
            out = self.act1(self.bn1(self.conv1(x)) + self.shortcut(x))
            return self.act2(self.bn2(self.conv2(out)) + out)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A 3-stage (16/32/64) or 4-stage (64..512) ResNet for 32x32 images."""

    irconvert_input_size = CIFAR_INPUT_SIZE

    def __init__(
        self, num_blocks: list[int], num_classes: int = 10,
        widths: tuple[int, ...] = (16, 32, 64), option: str = "A", head_bn: bool = False,
    ) -> None:
        super().__init__()
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act = nn.ReLU(inplace=True)
        for i, (width, blocks) in enumerate(zip(widths, num_blocks, strict=True)):
            stride = 1 if i == 0 else 2
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(BasicBlock(self.in_planes, width, s, option))
                self.in_planes = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.num_stages = len(widths)
        # The authors' 1W/1A network normalises the pooled features before
        # the classifier; the pretrained float ResNets have no such layer.
        self.bn2: nn.Module | None = nn.BatchNorm1d(widths[-1]) if head_bn else None
        self.linear = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            out = getattr(self, f"layer{i + 1}")(out)
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        if self.bn2 is not None:
            out = self.bn2(out)
        return self.linear(out)


def cifar_resnet(depth: int, num_classes: int = 10, head_bn: bool = False) -> CifarResNet:
    """CIFAR ResNet-``depth`` (20, 32, 44, 56, 110) with option-A shortcuts.

    ``head_bn`` adds the IR-Net authors' BatchNorm1d before the classifier.
    """
    if (depth - 2) % 6 or depth < 8:
        raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
    n = (depth - 2) // 6
    return CifarResNet([n, n, n], num_classes, head_bn=head_bn)


def cifar_resnet18(num_classes: int = 10) -> CifarResNet:
    """ResNet-18 for CIFAR: 4 stages of 2 blocks, 1x1 projection shortcuts."""
    return CifarResNet([2, 2, 2, 2], num_classes, widths=(64, 128, 256, 512), option="B")


class VGGSmall(nn.Module):
    """VGG-Small: 6 3x3 convs (128-128-256-256-512-512), 3 max-pools, one FC."""

    irconvert_input_size = CIFAR_INPUT_SIZE

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        widths = [(3, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
        for i, (cin, cout) in enumerate(widths):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, 3, padding=1, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(cout))
        self.pooling = nn.MaxPool2d(2, 2)
        self.nonlinear = nn.Hardtanh(inplace=True)
        self.fc = nn.Linear(512 * 4 * 4, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(6):
            x = getattr(self, f"conv{i}")(x)
            if i % 2 == 1:  # conv -> pool -> bn -> act, as in the authors' code
                x = self.pooling(x)
            x = self.nonlinear(getattr(self, f"bn{i}")(x))
        return self.fc(torch.flatten(x, 1))


def vgg_small(num_classes: int = 10) -> VGGSmall:
    return VGGSmall(num_classes)
