"""IRConv2d / IRLinear equal the float layer applied to binarized inputs and weights."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irconvert.nn import IRConv2d, IRLayer, IRLinear, set_ede


def _sign(x: Tensor) -> Tensor:
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def _binary_weight(w: Tensor) -> Tensor:
    """sign(w_hat) * 2 ** round(log2(mean|w_hat|)), written out independently."""
    flat = w.detach().flatten(1)
    w_hat = (flat - flat.mean(1, keepdim=True)) / (flat - flat.mean(1, keepdim=True)).std(
        1, keepdim=True
    )
    scale = 2.0 ** torch.round(torch.log2(w_hat.abs().mean(1, keepdim=True)))
    return (_sign(w_hat) * scale).view_as(w)


CONV_CASES: list[dict[str, Any]] = [
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=2, dilation=2),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2, bias=False),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4),
    dict(in_channels=4, out_channels=6, kernel_size=1, stride=2, bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 1), stride=(2, 1), padding=(1, 0)),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding="same"),
]


@pytest.mark.parametrize("binary_act", [True, False], ids=["1W1A", "1W32A"])
@pytest.mark.parametrize("kwargs", CONV_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in
                                                                     k.items()))
def test_irconv2d_equals_conv_of_binarized(kwargs: dict[str, Any], binary_act: bool) -> None:
    float_conv = nn.Conv2d(**kwargs)
    layer = IRConv2d.from_float(float_conv, binary_act=binary_act)
    x = torch.randn(2, 4, 9, 9)
    x[0, 0, :3, :3] = 0.0  # exact zeros binarize to +1
    expected = F.conv2d(
        _sign(x) if binary_act else x, _binary_weight(float_conv.weight), float_conv.bias,
        float_conv.stride, float_conv.padding, float_conv.dilation, float_conv.groups,
    )
    torch.testing.assert_close(layer(x), expected)
    assert layer.act_bits == (1 if binary_act else 32)


@pytest.mark.parametrize("binary_act", [True, False], ids=["1W1A", "1W32A"])
@pytest.mark.parametrize("bias", [True, False])
def test_irlinear_equals_linear_of_binarized(binary_act: bool, bias: bool) -> None:
    float_linear = nn.Linear(7, 5, bias=bias)
    layer = IRLinear.from_float(float_linear, binary_act=binary_act)
    x = torch.randn(3, 7)
    x[1, :4] = 0.0
    expected = F.linear(_sign(x) if binary_act else x, _binary_weight(float_linear.weight),
                        float_linear.bias)
    torch.testing.assert_close(layer(x), expected)


def test_zero_input_is_plus_one() -> None:
    layer = IRLinear(6, 3, bias=False)
    out = layer(torch.zeros(1, 6))
    expected = _binary_weight(layer.weight).sum(1)  # all-ones input
    torch.testing.assert_close(out[0], expected)
    conv = IRConv2d(2, 3, 1, bias=False)
    out = conv(torch.zeros(1, 2, 2, 2))
    torch.testing.assert_close(out[0, :, 0, 0], _binary_weight(conv.weight).flatten(1).sum(1))


@pytest.mark.parametrize("make", [lambda: nn.Conv2d(3, 4, 3, bias=True),
                                  lambda: nn.Linear(5, 2)], ids=["conv", "linear"])
def test_from_float_shares_weights_and_keeps_keys(make: Any) -> None:
    float_layer = make()
    cls = IRConv2d if isinstance(float_layer, nn.Conv2d) else IRLinear
    layer = cls.from_float(float_layer)
    assert isinstance(layer, type(float_layer)) and isinstance(layer, IRLayer)
    assert layer.weight is float_layer.weight and layer.bias is float_layer.bias
    assert list(layer.state_dict()) == ["weight", "bias", "ede_t", "ede_k"]
    for tensor in layer.state_dict().values():
        assert tensor.device.type == "cpu"  # nothing left on the meta device
    back = layer.to_float()
    assert type(back) is type(float_layer)
    assert back.weight is float_layer.weight and back.bias is float_layer.bias
    assert list(back.state_dict()) == ["weight", "bias"]
    x = torch.randn(2, 3, 6, 6) if cls is IRConv2d else torch.randn(2, 5)
    torch.testing.assert_close(back(x), float_layer(x))


def test_from_float_keeps_geometry_and_mode() -> None:
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, dilation=1, groups=2, bias=False).eval()
    layer = IRConv2d.from_float(conv, binary_act=False)
    assert (layer.stride, layer.padding, layer.groups, layer.bias) == ((2, 2), (1, 1), 2, None)
    assert not layer.training and not layer.binary_act
    assert "act_bits=32" in repr(layer)
    back = layer.to_float()
    assert (back.stride, back.padding, back.groups, back.bias) == ((2, 2), (1, 1), 2, None)


def test_state_dict_round_trip_restores_ede() -> None:
    a = IRConv2d(3, 4, 3)
    set_ede(a, 3.0, 0.5)
    b = IRConv2d(3, 4, 3)
    b.load_state_dict(a.state_dict())
    assert (b.ede_t.item(), b.ede_k.item()) == (3.0, 0.5)
    torch.testing.assert_close(b.weight, a.weight)
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    torch.testing.assert_close(b(x), a(x))


def test_float_state_dict_loads_into_ir_layer() -> None:
    float_conv = nn.Conv2d(3, 4, 3)
    layer = IRConv2d(3, 4, 3)
    set_ede(layer, 2.0, 1.0)
    result = layer.load_state_dict(float_conv.state_dict())  # strict, no ede keys
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(layer.weight, float_conv.weight)
    assert (layer.ede_t.item(), layer.ede_k.item()) == (2.0, 1.0)  # kept
    linear = IRLinear(4, 2)
    linear.load_state_dict(nn.Linear(4, 2).state_dict())
    # the caller's dict is not changed by the fill-in
    sd = nn.Linear(4, 2).state_dict()
    linear.load_state_dict(sd)
    assert list(sd) == ["weight", "bias"]


def test_ede_gradients_reach_input_and_latent_weight() -> None:
    layer = IRLinear(4, 3, bias=False)
    set_ede(layer, 1.0, 1.0)
    x = torch.tensor([[0.0, 0.5, -0.5, 2.0]], requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None
    wb = _binary_weight(layer.weight)
    # d/dx sum(sign(x) @ Wb^T) = sum_o Wb[o] * (1 - tanh(x)^2)
    expected = wb.sum(0) * (1 - torch.tanh(x.detach()[0]) ** 2)
    torch.testing.assert_close(x.grad[0], expected)


def test_set_ede_counts_layers() -> None:
    model = nn.Sequential(IRConv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), IRLinear(4, 2),
                          nn.Linear(2, 2))
    assert set_ede(model, 5.0, 1.0) == 2
    assert model[0].ede_t.item() == 5.0 and model[3].ede_k.item() == 1.0


def test_non_zero_padding_rejected() -> None:
    with pytest.raises(ValueError, match="zero padding"):
        IRConv2d(3, 4, 3, padding=1, padding_mode="reflect")


def test_buffers_follow_dtype() -> None:
    layer = IRConv2d(2, 3, 3).double()
    assert layer.ede_t.dtype == torch.float64
    out = layer(torch.randn(1, 2, 4, 4, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_buffers_created_on_the_layer_device() -> None:
    layer = IRLinear(3, 2, device="meta")
    assert layer.ede_t.device.type == "meta" and layer.ede_k.device.type == "meta"
