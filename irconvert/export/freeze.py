"""Freezing: latent IR-Net weights -> sign bits + a power-of-two scale per channel.

``freeze(model)`` returns a copy of a binarized model in which every
:class:`~irconvert.nn.IRConv2d`/:class:`~irconvert.nn.IRLinear` is replaced by a
:class:`FrozenBinaryConv2d`/:class:`FrozenBinaryLinear`. A frozen layer holds
``sign`` (+-1, float32) and ``scale`` (``2 ** exponent`` per output channel)
and computes ``conv(sign(x - b) if binary_act else x, sign * scale)``: the very
tensors the IR layer's eval-mode forward pass builds, so the outputs are
bit-for-bit equal. ``b`` is the learnt per-input-channel threshold
(``act_threshold``, ReActNet's RSign), a buffer that exists only when the
source layer has one; without it the activation is ``sign(x)``. BatchNorm
layers are left as they are; inference engines fuse them (ONNX Runtime folds
BatchNormalization into the preceding Conv, OpenVINO folds the scale Multiply
and the BatchNorm into one per-channel affine after the binary convolution).

A frozen layer can also compute its weight from packed bits inside its
forward pass (:meth:`FrozenBinaryLayer.use_packed_`), with only arithmetic
that every ONNX opset >= 9 has (Cast, Div, Floor, Mul, Sub, Reshape, Slice);
that is what ``export_onnx(..., packed=True)`` traces.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irconvert.errors import ExportError
from irconvert.export.bits import pack_signs
from irconvert.functional import binary_sign, pow2_scale, standardize
from irconvert.nn import IRConv2d, IRLayer, IRLinear
from irconvert.nn.layers import channel_view

__all__ = [
    "FrozenBinaryConv2d",
    "FrozenBinaryLayer",
    "FrozenBinaryLinear",
    "as_frozen",
    "binary_layers",
    "freeze",
    "freeze_layer",
    "sign_activation",
]


def sign_activation(x: Tensor) -> Tensor:
    """``sign(x)`` with ``sign(0) = +1``, written as ``Where(x >= 0, 1, -1)`` when exported."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def subtract_threshold(x: Tensor, threshold: Tensor, channel_dim: int = 1) -> Tensor:
    """``x - b`` with ``b`` per channel (dim 1, or the last for linear): one ``Sub`` node.

    The same float subtraction as :meth:`irconvert.nn.IRLayer.binarize_input`,
    so ``sign(x - b)`` is bit-for-bit the training-time sign.
    """
    return x - channel_view(threshold.to(x.dtype), x, channel_dim)


ZERO_EXPONENT = -128


def exponents_of(scale: Tensor) -> Tensor:
    """The int8 exponents ``e`` with ``2 ** e == scale``.

    A scale of 0 (a channel whose latent weights are all equal: ``w_hat`` is 0,
    so Libra-PB's scale is ``2 ** round(log2(0)) = 0``) is stored as -128.

    Raises:
        ExportError: a scale is not 0 or a power of two in ``2 ** [-127, 127]``.
    """
    s = scale.double()
    exp = torch.round(torch.log2(torch.where(s > 0, s, 1.0)))
    exact = torch.equal(torch.where(s > 0, torch.pow(2.0, exp), 0.0), s)
    if not exact or exp.abs().max() > 127:
        raise ExportError("a binary-layer scale is not a power of two within int8 exponents")
    return torch.where(s > 0, exp, float(ZERO_EXPONENT)).to(torch.int8)


def scales_of(exponents: Tensor) -> Tensor:
    """Inverse of :func:`exponents_of`: float32 ``2 ** e`` (0 for -128)."""
    exp = exponents.to(torch.float32)
    return torch.where(exponents == ZERO_EXPONENT, 0.0, torch.pow(2.0, exp))


def _unpack_in_graph(bits: Tensor, numel: int) -> Tensor:
    # Float arithmetic instead of bit operators: exact for bytes (< 2**24) and
    # exportable to any opset (BitwiseAnd needs opset 18).
    powers = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0], device=bits.device)
    q = torch.floor(bits.to(torch.float32).unsqueeze(1) / powers)
    bit = q - 2.0 * torch.floor(q / 2.0)
    return bit.reshape(-1)[:numel] * 2.0 - 1.0


class FrozenBinaryLayer(nn.Module):
    """What both frozen layers share: sign/scale buffers and the packed mode."""

    sign: Tensor
    scale: Tensor
    bits: Tensor
    bias: Tensor | None
    act_threshold: Tensor | None

    def _init_frozen(self, weight_shape: tuple[int, ...], bias: bool, binary_act: bool,
                     in_channels: int, act_threshold: bool) -> None:
        self.weight_shape = tuple(int(d) for d in weight_shape)
        self.binary_act = binary_act
        self.packed = False
        if act_threshold and not binary_act:
            raise ExportError("an activation threshold needs binary activations (1W/1A)")
        self.register_buffer("sign", torch.ones(self.weight_shape))
        self.register_buffer("scale", torch.ones(self.weight_shape[0]))
        self.register_buffer("bias", torch.zeros(self.weight_shape[0]) if bias else None)
        # A None buffer is left out of state_dict: models without thresholds
        # keep exactly the keys (and packed files) they had before.
        self.register_buffer("act_threshold",
                             torch.zeros(in_channels) if act_threshold else None)

    @property
    def has_threshold(self) -> bool:
        return self.act_threshold is not None

    @property
    def numel(self) -> int:
        return math.prod(self.weight_shape)

    def exponents(self) -> Tensor:
        """Per-channel int8 exponents of the power-of-two scale."""
        return exponents_of(self.scale)

    def packed_bits(self) -> np.ndarray:
        """The weight signs packed 8 per byte (see :mod:`irconvert.export.bits`)."""
        return pack_signs(self.sign)

    def use_packed_(self, packed: bool = True) -> None:
        """Compute the weight from packed uint8 bits in ``forward`` (for export)."""
        if packed:
            bits = torch.from_numpy(self.packed_bits().copy())
            self.register_buffer("bits", bits)
        elif "bits" in self._buffers:
            del self._buffers["bits"]
        self.packed = packed

    def weight(self) -> Tensor:
        """``sign * scale``: exactly the weight the IR layer used (scale is a power of two)."""
        shape = (-1,) + (1,) * (len(self.weight_shape) - 1)
        sign = (_unpack_in_graph(self.bits, self.numel).reshape(self.weight_shape)
                if self.packed else self.sign)
        return sign * self.scale.reshape(shape)

    def act(self, x: Tensor) -> Tensor:
        if not self.binary_act:
            return x
        if self.act_threshold is not None:
            x = subtract_threshold(x, self.act_threshold,
                                   -1 if isinstance(self, FrozenBinaryLinear) else 1)
        return sign_activation(x)

    def _load_frozen(self, sign: Tensor, scale: Tensor, bias: Tensor | None,
                     threshold: Tensor | None = None) -> None:
        self.sign.copy_(sign.reshape(self.weight_shape))
        self.scale.copy_(scale.reshape(-1))
        if self.bias is not None and bias is not None:
            self.bias.copy_(bias)
        if self.act_threshold is not None and threshold is not None:
            self.act_threshold.copy_(threshold.reshape(-1))

    def _act_config(self) -> dict[str, Any]:
        # The key only when set: records of threshold-free layers (and the
        # .irc files holding them) stay what older irconvert versions wrote.
        return {"act_threshold": True} if self.has_threshold else {}

    def _act_repr(self) -> str:
        return ", act_threshold=True" if self.has_threshold else ""


class FrozenBinaryConv2d(FrozenBinaryLayer):
    """Inference-only binary conv: ``conv2d(sign(x - b), sign_w * scale) + bias``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], *,
        stride: tuple[int, int] = (1, 1), padding: Any = (0, 0),
        dilation: tuple[int, int] = (1, 1), groups: int = 1, bias: bool = False,
        binary_act: bool = True, act_threshold: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = tuple(kernel_size)
        self.stride, self.padding = tuple(stride), padding
        self.dilation, self.groups = tuple(dilation), groups
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self._init_frozen(shape, bias, binary_act, in_channels, act_threshold)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(self.act(x), self.weight(), self.bias, self.stride,  # type: ignore[arg-type]
                        self.padding, self.dilation, self.groups)

    def config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-friendly (the ``.irc`` layer record)."""
        padding = self.padding if isinstance(self.padding, str) else list(self.padding)
        return {"kind": "conv2d", "in_channels": self.in_channels,
                "out_channels": self.out_channels, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "padding": padding,
                "dilation": list(self.dilation), "groups": self.groups,
                "bias": self.bias is not None, "binary_act": self.binary_act,
                **self._act_config()}

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
                f"act_bits={1 if self.binary_act else 32}{self._act_repr()}, "
                f"packed={self.packed}")


class FrozenBinaryLinear(FrozenBinaryLayer):
    """Inference-only binary linear: ``linear(sign(x - b), sign_w * scale) + bias``."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = False,
                 binary_act: bool = True, act_threshold: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_frozen((out_features, in_features), bias, binary_act, in_features,
                          act_threshold)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.act(x), self.weight(), self.bias)

    def config(self) -> dict[str, Any]:
        return {"kind": "linear", "in_features": self.in_features,
                "out_features": self.out_features, "bias": self.bias is not None,
                "binary_act": self.binary_act, **self._act_config()}

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, "
                f"act_bits={1 if self.binary_act else 32}{self._act_repr()}, "
                f"packed={self.packed}")


def layer_from_config(cfg: dict[str, Any]) -> FrozenBinaryLayer:
    """An empty frozen layer from its :meth:`config` record.

    Records written before thresholds existed have no ``act_threshold``: none.
    """
    cfg = dict(cfg)
    kind = cfg.pop("kind", None)
    threshold = bool(cfg.get("act_threshold", False))
    if kind == "conv2d":
        padding = cfg.pop("padding")
        return FrozenBinaryConv2d(
            cfg["in_channels"], cfg["out_channels"], tuple(cfg["kernel_size"]),
            stride=tuple(cfg["stride"]), padding=padding if isinstance(padding, str)
            else tuple(padding), dilation=tuple(cfg["dilation"]), groups=cfg["groups"],
            bias=cfg["bias"], binary_act=cfg["binary_act"], act_threshold=threshold)
    if kind == "linear":
        return FrozenBinaryLinear(cfg["in_features"], cfg["out_features"], bias=cfg["bias"],
                                  binary_act=cfg["binary_act"], act_threshold=threshold)
    raise ExportError(f"unknown binary layer kind {kind!r} in the packed file")


@torch.no_grad()
def freeze_layer(layer: nn.Module) -> FrozenBinaryLayer:
    """The frozen equivalent of one IR-Net layer.

    Raises:
        ExportError: ``layer`` is not an IRConv2d/IRLinear, or its binarization
            is switched off (a staged-training model between stages).
    """
    frozen: FrozenBinaryLayer
    if isinstance(layer, IRLayer):
        _check_binarizing(layer, type(layer).__name__)
    if isinstance(layer, IRConv2d):
        frozen = FrozenBinaryConv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size,  # type: ignore[arg-type]
            stride=layer.stride, padding=layer.padding,  # type: ignore[arg-type]
            dilation=layer.dilation, groups=layer.groups,  # type: ignore[arg-type]
            bias=layer.bias is not None, binary_act=layer.binary_act,
            act_threshold=layer.act_threshold is not None)
    elif isinstance(layer, IRLinear):
        frozen = FrozenBinaryLinear(layer.in_features, layer.out_features,
                                    bias=layer.bias is not None, binary_act=layer.binary_act,
                                    act_threshold=layer.act_threshold is not None)
    else:
        raise ExportError(f"cannot freeze a {type(layer).__name__}: only IRConv2d and IRLinear")
    weight = layer.weight.detach().float().cpu()
    w_hat = standardize(weight)
    threshold = layer.act_threshold
    frozen._load_frozen(binary_sign(w_hat), pow2_scale(w_hat),
                        None if layer.bias is None else layer.bias.detach().float().cpu(),
                        None if threshold is None else threshold.detach().float().cpu())
    return frozen


def _check_binarizing(layer: IRLayer, name: str) -> None:
    # A frozen layer always binarizes; a layer that staged training left with
    # float weights or inputs computes something else, so its export would
    # not reproduce the model.
    if not (layer.weights_on and layer.acts_on):
        raise ExportError(f"{name} has its binarization switched off (staged training); "
                          "call irconvert.nn.set_binarization(model, weights=True, "
                          "activations=True) before exporting")


def binary_layers(model: nn.Module) -> dict[str, FrozenBinaryLayer]:
    """Dotted name -> frozen binary layer, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, FrozenBinaryLayer)}


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def freeze(model: nn.Module) -> nn.Module:
    """A frozen, eval-mode copy of a binarized model (``model`` is untouched).

    Args:
        model: a model that :func:`irconvert.binarize_` converted (and trained).

    Returns:
        A copy on the CPU in float32 whose IR-Net layers are frozen binary
        layers; its eval-mode outputs equal ``model.eval()``'s exactly.

    Raises:
        ExportError: the model has no binarized layer, or a layer's
            binarization is switched off (staged training).

    Example:
        >>> frozen = freeze(binarized_model)
    """
    names = [n for n, m in model.named_modules() if isinstance(m, IRLayer)]
    already = binary_layers(model)
    if not names and not already:
        raise ExportError("the model has no binarized layer; run binarize_ (or irconvert "
                          "train) first, or export the float model with torch.onnx directly")
    for name in names:  # before the copy: a refused model costs nothing
        _check_binarizing(model.get_submodule(name), name)  # type: ignore[arg-type]
    new = copy.deepcopy(model).cpu().float().eval()
    for name in names:
        _set_submodule(new, name, freeze_layer(new.get_submodule(name)))
    for p in new.parameters():
        p.requires_grad_(False)
    return new


def as_frozen(model: nn.Module) -> nn.Module:
    """``model`` when it is frozen already, else :func:`freeze` of it (a copy).

    Every exporter takes either a model converted by :func:`irconvert.binarize_`
    (IR-Net layers, frozen here) or an already frozen one (an ``.irc`` loaded).
    """
    has_ir = any(isinstance(m, IRLayer) for m in model.modules())
    return freeze(model) if has_ir or not binary_layers(model) else model
