"""Block transforms: Bi-Real form for CIFAR, torchvision and timm ResNet blocks."""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import irconvert
from irconvert import BinarizeConfig
from irconvert.convert import blocks
from irconvert.convert.blocks import (
    fit_shortcut,
    transform_cifar_blocks,
    transform_timm_blocks,
    transform_torchvision_blocks,
)
from irconvert.models import cifar_resnet

SMALL = (3, 64, 64)


def _small(model: nn.Module) -> nn.Module:
    # the non-negative-input probe runs on this size instead of 224x224 (speed)
    model.irconvert_input_size = SMALL  # type: ignore[assignment]
    return model.eval()


FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "cifar_resnet20": lambda: cifar_resnet(20).eval(),
    "tv_resnet18": lambda: _small(torchvision.models.resnet18(num_classes=10)),
    "tv_resnet50": lambda: _small(torchvision.models.resnet50(num_classes=10)),
    "timm_resnet18": lambda: _small(timm.create_model("resnet18", num_classes=10)),
    "timm_resnet50": lambda: _small(timm.create_model("resnet50", num_classes=10)),
}
N_BLOCKS = {"cifar_resnet20": 9, "tv_resnet18": 8, "tv_resnet50": 16,
            "timm_resnet18": 8, "timm_resnet50": 16}


def _shapes(model: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in model.state_dict().items()}


def _input(model: nn.Module) -> torch.Tensor:
    shape = getattr(model, "irconvert_input_size", SMALL)
    return torch.randn(2, *shape)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_transform_keeps_keys_and_runs(family: str) -> None:
    model = FAMILIES[family]()
    before = _shapes(model)
    state = copy.deepcopy(model.state_dict())
    changed = [n for t in (transform_cifar_blocks, transform_torchvision_blocks,
                           transform_timm_blocks) for n in t(model)]
    assert len(changed) == N_BLOCKS[family]
    assert _shapes(model) == before
    model.load_state_dict(state, strict=True)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    out = model(_input(model))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    # a second run finds nothing left to do
    assert transform_cifar_blocks(model) + transform_torchvision_blocks(model) + \
        transform_timm_blocks(model) == []


def test_isinstance_and_pickle_survive() -> None:
    model = FAMILIES["tv_resnet18"]()
    transform_torchvision_blocks(model)
    block = model.layer1[0]
    assert isinstance(block, torchvision.models.resnet.BasicBlock)
    assert type(block).__name__ == "TorchvisionBiRealBasicBlock"
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    x = _input(model)
    torch.testing.assert_close(again(x), model(x))


def test_torchvision_basic_block_formula() -> None:
    model = FAMILIES["tv_resnet18"]()
    transform_torchvision_blocks(model)
    b = model.layer2[0]  # the downsampling block: its downsample serves conv1
    x = torch.randn(2, 64, 16, 16)
    out1 = F.hardtanh(b.bn1(b.conv1(x)) + b.downsample(x))
    expected = F.hardtanh(b.bn2(b.conv2(out1)) + out1)
    torch.testing.assert_close(b(x), expected)
    assert isinstance(b.relu, nn.Hardtanh) and isinstance(model.relu, nn.Hardtanh)


def test_torchvision_bottleneck_formula() -> None:
    model = FAMILIES["tv_resnet50"]()
    transform_torchvision_blocks(model)
    b = model.layer2[0]  # 256 -> width 128 (stride 2 in conv2) -> 512, with downsample
    x = torch.randn(2, 256, 8, 8)
    mean_groups = (x[:, :128] + x[:, 128:]) / 2  # channel j: mean of j and j + 128
    out1 = F.hardtanh(b.bn1(b.conv1(x)) + mean_groups)
    out2 = F.hardtanh(b.bn2(b.conv2(out1)) + F.avg_pool2d(out1, 2))
    expected = F.hardtanh(b.bn3(b.conv3(out2)) + b.downsample(x))
    torch.testing.assert_close(b(x), expected)


def test_timm_bottleneck_formula() -> None:
    model = FAMILIES["timm_resnet50"]()
    transform_timm_blocks(model)
    assert isinstance(model.act1, nn.Hardtanh)
    b = model.layer1[1]  # 256 -> width 64 -> 256, identity shortcut
    x = torch.randn(2, 256, 8, 8)
    mean_groups = x.view(2, 4, 64, 8, 8).mean(1)
    out1 = F.hardtanh(b.bn1(b.conv1(x)) + mean_groups)
    out2 = F.hardtanh(b.bn2(b.conv2(out1)) + out1)
    torch.testing.assert_close(b(x), F.hardtanh(b.bn3(b.conv3(out2)) + x))


def test_cifar_block_formula_and_stem() -> None:
    model = FAMILIES["cifar_resnet20"]()
    transform_cifar_blocks(model)
    assert isinstance(model.act, nn.Hardtanh)
    b = model.layer2[0]
    assert b.bireal
    x = torch.randn(2, 16, 8, 8)
    out1 = F.hardtanh(b.bn1(b.conv1(x)) + b.shortcut(x))
    torch.testing.assert_close(b(x), F.hardtanh(b.bn2(b.conv2(out1)) + out1))


def test_fit_shortcut() -> None:
    x = torch.randn(2, 4, 5, 5)
    assert fit_shortcut(x, 4) is x
    torch.testing.assert_close(fit_shortcut(x, 8), torch.cat([x, x], 1))
    torch.testing.assert_close(fit_shortcut(x, 6), torch.cat([x, x[:, :2]], 1))
    torch.testing.assert_close(fit_shortcut(x, 2), (x[:, :2] + x[:, 2:]) / 2)
    # 4 -> 3: channel 0 averages inputs 0 and 3; channels 1, 2 have one input each
    torch.testing.assert_close(fit_shortcut(x, 3), torch.stack(
        [(x[:, 0] + x[:, 3]) / 2, x[:, 1], x[:, 2]], 1))
    pooled = fit_shortcut(x, 4, stride=2)  # odd size: like a 3x3/pad-1/stride-2 conv
    assert pooled.shape == (2, 4, 3, 3)
    torch.testing.assert_close(pooled[:, :, 2, 2], x[:, :, 4, 4])


@pytest.mark.parametrize("family", ["cifar_resnet20", "tv_resnet18"])
def test_1w1a_conversion_has_no_relu_warning(family: str) -> None:
    model = FAMILIES[family]()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = irconvert.binarize_(model, BinarizeConfig(act_bits=1))
    assert report.warnings == []
    assert len(report.blocks) == N_BLOCKS[family]
    assert torch.isfinite(model(_input(model))).all()


def test_without_transform_relu_fed_convs_get_thresholds() -> None:
    model = FAMILIES["cifar_resnet20"]()
    report = irconvert.binarize_(model, BinarizeConfig(act_bits=1, block_transform="off"),
                                 warn=False)
    assert report.blocks == [] and report.warnings == []
    # every binarized conv of a plain ReLU ResNet reads a ReLU output
    assert len(report.fixes) == report.binarized_layers == 18
    warned = irconvert.binarize_(FAMILIES["cifar_resnet20"](), BinarizeConfig(
        act_bits=1, block_transform="off", one_signed_inputs="warn"), warn=False)
    assert len(warned.warnings) == 18 and warned.fixes == []


@pytest.mark.parametrize("config", [BinarizeConfig(act_bits=1, block_transform="off"),
                                    BinarizeConfig(act_bits=32)])
def test_off_and_1w32a_leave_blocks_untouched(config: BinarizeConfig) -> None:
    model = FAMILIES["tv_resnet18"]()
    irconvert.binarize_(model, config, warn=False)
    assert type(model.layer1[0]) is torchvision.models.resnet.BasicBlock
    assert isinstance(model.relu, nn.ReLU)
    cifar = FAMILIES["cifar_resnet20"]()
    irconvert.binarize_(cifar, config, warn=False)
    assert not cifar.layer1[0].bireal and isinstance(cifar.act, nn.ReLU)


def test_1w32a_with_transform_on() -> None:
    model = FAMILIES["cifar_resnet20"]()
    report = irconvert.binarize_(model, BinarizeConfig(act_bits=32, block_transform="on"))
    assert len(report.blocks) == 9 and model.layer1[0].bireal


def test_plan_lists_blocks_and_leaves_model_alone() -> None:
    model = FAMILIES["timm_resnet18"]()
    report = irconvert.plan(model, BinarizeConfig(act_bits=1))
    assert report.blocks == ["layer1.0", "layer1.1", "layer2.0", "layer2.1",
                             "layer3.0", "layer3.1", "layer4.0", "layer4.1"]
    assert report.warnings == []
    assert type(model.layer1[0]) is timm.models.resnet.BasicBlock
    assert blocks.transform_timm_blocks in irconvert.convert.BLOCK_TRANSFORMS


def test_unsupported_timm_block_is_left_alone() -> None:
    model = timm.create_model("resnet18", num_classes=10, aa_layer=nn.AvgPool2d).eval()
    changed = transform_timm_blocks(model)
    assert "layer2.0" not in changed and "layer1.0" in changed


@pytest.mark.data
def test_pretrained_resnet20_loads_strictly(resnet20_weights: Path) -> None:
    state = torch.load(resnet20_weights, map_location="cpu", weights_only=True)["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = cifar_resnet(20)
    report = irconvert.binarize_(model, BinarizeConfig(act_bits=1))
    assert report.warnings == [] and len(report.blocks) == 9
    model.load_state_dict(state, strict=True)  # the IR layers fill in their EDE state
    fresh = cifar_resnet(20)
    transform_cifar_blocks(fresh)
    fresh.load_state_dict(state, strict=True)
    assert torch.isfinite(fresh.eval()(torch.randn(2, 3, 32, 32))).all()
