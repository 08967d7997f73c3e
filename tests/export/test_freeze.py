"""Freezing: frozen layers reproduce the IR layers' eval outputs exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import irconvert
from irconvert.errors import ExportError
from irconvert.export.freeze import (
    FrozenBinaryConv2d,
    FrozenBinaryLinear,
    binary_layers,
    freeze,
    freeze_layer,
    scales_of,
)
from irconvert.nn import IRConv2d, IRLinear
from tests.conftest import TinyNet


def randomize_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("act_bits", [1, 32])
def test_tiny_net_exact(act_bits: int) -> None:
    model = TinyNet()
    cfg = irconvert.BinarizeConfig(act_bits=act_bits, keep_classifier=False)  # type: ignore[arg-type]
    irconvert.binarize_(model, cfg, warn=False)
    randomize_bn(model)
    model.eval()
    frozen = freeze(model)
    kinds = {type(m) for m in binary_layers(frozen).values()}
    assert kinds == {FrozenBinaryConv2d, FrozenBinaryLinear}
    assert any(isinstance(m, IRConv2d) for m in model.modules())  # source untouched
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(frozen(x), model(x))
        for layer in binary_layers(frozen).values():
            layer.use_packed_(True)
        assert torch.equal(frozen(x), model(x))


def test_layer_weight_and_zero_activation() -> None:
    conv = IRConv2d(8, 4, 3, padding=1, bias=True)
    with torch.no_grad():
        conv.weight[0] = 0.0  # an all-equal channel: std 0, all +1
        conv.weight[1] *= 40  # heavy scale: still a power of two
    frozen = freeze_layer(conv.eval())
    assert torch.equal(frozen.weight(), conv.binary_weight().detach())
    assert torch.equal(frozen.scale, scales_of(frozen.exponents()))
    assert frozen.exponents()[0] == -128 and frozen.scale[0] == 0
    x = torch.randn(2, 8, 5, 5)
    x[:, :, 0] = 0.0
    x[:, :, 1] = -0.0
    with torch.no_grad():
        assert torch.equal(frozen(x), conv(x))
    linear = IRLinear(16, 3, binary_act=False).eval()
    y = torch.randn(4, 16)
    with torch.no_grad():
        assert torch.equal(freeze_layer(linear)(y), linear(y))


def test_no_binarized_layer() -> None:
    with pytest.raises(ExportError, match="no binarized layer"):
        freeze(TinyNet())


def test_unfreezable_layer() -> None:
    class IRConv1d(IRConv2d):  # an IR layer a user added that export cannot express
        pass

    with pytest.raises(ExportError, match="cannot freeze"):
        freeze_layer(nn.Conv1d(4, 4, 3))
    assert isinstance(freeze_layer(IRConv1d(8, 8, 3)), FrozenBinaryConv2d)
