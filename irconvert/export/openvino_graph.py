"""OpenVINO graph surgery: binary convolutions as bit-packed ``BinaryConvolution``.

The frozen model is exported to ONNX
(:mod:`irconvert.export.onnx_export`) and read with ``openvino.convert_model``
(which folds each BatchNorm into the preceding convolution's weights). Then
every convolution that reads ``Select(x >= 0, 1, -1)`` and whose weights are
``+-a_c`` (one magnitude per output channel, which a binary weight times its
power-of-two scale and a folded BatchNorm always is) is replaced by::

    FakeQuantize(x, in_low=in_high=-FLT_MIN, out_low=0, out_high=1, levels=2)
      -> BinaryConvolution(u1 filters, mode=xnor-popcount, pad_value=0)
      -> Multiply(a_c)

which the CPU plugin runs as a bit-packed ``BinaryConvolution`` kernel.
Why each piece, as measured on this OpenVINO (2026.4) CPU plugin:

- FakeQuantize maps ``x <= threshold`` to the low output. A threshold of 0
  would send exact zeros to -1; ``-FLT_MIN`` (the smallest normal float)
  sends 0.0 and -0.0 to +1, i.e. ``sign(0) = +1`` as in training. Only
  negative subnormals (|x| < 1.2e-38) would differ.
- Output levels must be 0/1: the 0/1 output is the bit the kernel packs;
  BinaryConvolution reads bit 1 as +1 and bit 0 as -1. Output levels -1/+1
  give wrong results (or NaN) silently.
- ``pad_value=0`` makes padded positions contribute 0, exactly as the zero
  padding of ``sign(x)`` in training.
- u1 filters are packed little-endian within each byte (bit ``i % 8`` of
  byte ``i // 8``), the layout of the ``.irc`` format.
- The per-channel magnitude is applied after the integer-valued binary
  convolution, so the convolution itself is exact.
- A learnt activation threshold (``sign(x - b)``, exported as ``Sub``, which
  OpenVINO reads as ``Add(x, -b)``) is folded into the FakeQuantize: per
  channel ``in_low = in_high = nextafter(b, -inf)`` of shape (1, C, 1, 1).
  In IEEE arithmetic ``x - b >= 0`` holds exactly when ``x >= b``, i.e.
  ``x > nextafter(b, -inf)``, so the bits are those of training, with no
  subtraction left in the graph. Any per-channel constant added right
  before the sign is folded the same way (it is the same arithmetic).
  A threshold that would be subnormal is replaced by 0 (for ``b > 0``) or
  ``-FLT_MIN`` (otherwise), as above, so that it keeps working when the
  plugin's denormals optimization (FTZ/DAZ) is on: only subnormal inputs
  next to such a ``b`` could differ.

RPReLU (``prelu(x - gamma) + zeta``, per channel) is exported as
``Sub``/``PRelu``/``Add`` and OpenVINO runs it as PRelu plus additions
(which the CPU plugin fuses into the neighbouring convolutions).

Convolutions the kernel cannot run stay float convolutions of ``sign(x)``
(numerically identical, not faster) and are reported: input channels not a
multiple of 8, grouped convolutions, 1W/32A layers (float inputs); binary
linear layers stay float MatMuls of ``sign(x)``.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from irconvert.export.freeze import FrozenBinaryConv2d, binary_layers
from irconvert.export.openvino_int8 import const_value
from irconvert.export.sign_names import sign_layer

__all__ = ["CRASHING_PRODUCERS", "fallback_reasons", "fq_thresholds", "normal_thresholds",
           "replace_binary_convs"]

_TINY = np.finfo(np.float32).tiny
_THRESHOLD = -_TINY


def fallback_reasons(frozen: nn.Module) -> dict[str, str]:
    """Binary layers that cannot run as BinaryConvolution, with the reason."""
    reasons: dict[str, str] = {}
    for name, layer in binary_layers(frozen).items():
        if not isinstance(layer, FrozenBinaryConv2d):
            reasons[name] = "linear layer: float MatMul of sign(x)"
        elif not layer.binary_act:
            reasons[name] = "1W/32A: float inputs, float convolution"
        elif layer.groups != 1:
            reasons[name] = "grouped convolution: float convolution of sign(x)"
        elif layer.in_channels % 8:
            reasons[name] = (f"{layer.in_channels} input channels (not a multiple of 8): "
                             "float convolution of sign(x)")
    return reasons


def _sign_source(select: Any) -> Any | None:
    """The ``x`` of ``Select(x >= 0, 1, -1)``, or None for any other node."""
    if select.get_type_name() != "Select":
        return None
    cond = select.input_value(0).get_node()
    one, minus = (const_value(select.input_value(i).get_node()) for i in (1, 2))
    if (cond.get_type_name() != "GreaterEqual" or one is None or minus is None
            or not np.all(one == 1) or not np.all(minus == -1)):
        return None
    zero = const_value(cond.input_value(1).get_node())
    if zero is None or not np.all(zero == 0):
        return None
    return cond.input_value(0)


def _per_channel(value: np.ndarray, channels: int) -> np.ndarray | None:
    """``value`` as ``channels`` floats when it broadcasts per channel over NCHW."""
    if value.ndim > 4 or value.dtype.kind != "f":
        return None
    shape = (1,) * (4 - value.ndim) + value.shape
    if shape[0] != 1 or shape[2:] != (1, 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(-1), (channels,)).astype(np.float32)


def _split_threshold(source: Any, channels: int) -> tuple[Any, np.ndarray | None]:
    """``(x, b)`` when ``source`` computes ``x - b`` with a per-channel constant ``b``.

    OpenVINO reads ONNX ``Sub(x, b)`` as ``Add(x, -b)``; both forms are
    recognised. For anything else: ``(source, None)``.
    """
    node = source.get_node()
    kind = node.get_type_name()
    if kind not in ("Add", "Subtract"):
        return source, None
    for i in (1, 0) if kind == "Add" else (1,):
        value = const_value(node.input_value(i).get_node())
        b = None if value is None else _per_channel(value, channels)
        if b is not None:  # negation is exact: -(-b) is b
            return node.input_value(1 - i), -b if kind == "Add" else b
    return source, None


def normal_thresholds(frozen: nn.Module) -> nn.Module:
    """``frozen``, or a copy whose subnormal activation thresholds are made normal.

    ``openvino.convert_model`` flushes subnormal constants to zero, and the
    calibrated threshold of a ReLU channel whose median is 0 is the smallest
    subnormal (``nextafter(0, inf)``: zeros go to -1, positives to +1). Read
    as 0 it would send every zero to +1. For any input that is not itself
    subnormal, ``x - b >= 0`` gives the same bits with ``b`` replaced by
    ``FLT_MIN`` (``b > 0``) or by 0 (``b < 0``), which survive the conversion.
    """
    def subnormal(t: Tensor | None) -> bool:
        return t is not None and bool(((t != 0) & (t.abs() < float(_TINY))).any())

    if not any(subnormal(layer.act_threshold) for layer in binary_layers(frozen).values()):
        return frozen
    copy = deepcopy(frozen)
    for layer in binary_layers(copy).values():
        b = layer.act_threshold
        if subnormal(b):
            assert b is not None
            tiny = (b != 0) & (b.abs() < float(_TINY))
            normal = torch.where(b > 0, torch.full_like(b, float(_TINY)), torch.zeros_like(b))
            b.copy_(torch.where(tiny, normal, b))
    return copy


def fq_thresholds(b: np.ndarray) -> np.ndarray:
    """FakeQuantize thresholds ``t`` with ``(x > t) == (x - b >= 0)`` per channel.

    ``t = nextafter(b, -inf)``. A subnormal ``t`` would read as 0 when the CPU
    plugin flushes denormals (``CPU_DENORMALS_OPTIMIZATION``), sending exact
    zeros to the wrong side; it becomes 0 for ``b > 0`` and ``-FLT_MIN``
    otherwise (``b = 0`` gives ``-FLT_MIN``, the threshold of a plain
    ``sign(x)``). Only subnormal ``x`` next to such a ``b`` can then differ.
    """
    b = np.asarray(b, np.float32)
    t = np.nextafter(b, np.float32(-np.inf))
    return np.where(np.abs(t) >= _TINY, t, np.where(b > 0, 0.0, _THRESHOLD)).astype(np.float32)


def _u1_filters(ov: Any, signs: np.ndarray) -> Any:
    from irconvert.export.bits import pack_signs

    tensor = ov.Tensor(ov.Type.u1, ov.Shape(list(signs.shape)))
    tensor.data[:] = pack_signs(signs).reshape(tensor.data.shape)
    return tensor


# Producers whose output, fed straight into FakeQuantize -> BinaryConvolution,
# crash OpenVINO 2026.4's CPU plugin (segfault or heap corruption when the
# model runs; found with convnext's LayerNorm2d, whose last op is a permute
# back to NCHW; reproduced by a bare permute before a binary 3x3 conv; any
# op in between, e.g. an Add, avoids it). Such convolutions stay float
# convolutions of sign(x): exact, not faster, and reported.
CRASHING_PRODUCERS: dict[str, str] = {
    "Transpose": "input comes straight from a Transpose (a permute, e.g. LayerNorm2d's): "
                 "OpenVINO's CPU BinaryConvolution crashes on it; float convolution of sign(x)",
}


def replace_binary_convs(ov: Any, model: Any) -> tuple[int, dict[str, str]]:
    """Replace binary convolutions in place: ``(count, {node name: why kept float})``."""
    import openvino.opset1 as op1
    import openvino.opset13 as ops

    count = 0
    kept: dict[str, str] = {}
    scalar = np.zeros((1, 1, 1, 1), np.float32)
    for conv in list(model.get_ordered_ops()):
        if conv.get_type_name() != "Convolution":
            continue
        select = conv.input_value(0).get_node()
        source = _sign_source(select)
        weights = const_value(conv.input_value(1).get_node())
        if source is None or weights is None or weights.shape[1] % 8:
            continue
        flat = np.abs(weights.reshape(weights.shape[0], -1)).astype(np.float32)
        magnitude = flat[:, 0]
        if not np.all(flat == magnitude[:, None]):
            continue
        attrs = conv.get_attributes()
        source, b = _split_threshold(source, weights.shape[1])
        producer = source.get_node().get_type_name()
        if producer in CRASHING_PRODUCERS:
            kept[conv.get_friendly_name()] = CRASHING_PRODUCERS[producer]
            continue
        # Without a threshold the graph stays as before: one scalar threshold.
        thr = ops.constant(scalar + _THRESHOLD if b is None
                           else fq_thresholds(b).reshape(1, -1, 1, 1))
        fq = ops.fake_quantize(source, thr, thr, ops.constant(scalar),
                               ops.constant(scalar + 1), 2)
        # the layer's name (irconvert.export.sign_names) for the parity check and
        # profiles; OpenVINO merges the signs of layers that compute the same
        # thing, so one FakeQuantize may carry several
        names = sorted(n for n in select.output(0).get_names() if sign_layer(n))
        if names:
            fq.set_friendly_name(names[0])
            fq.output(0).add_names(set(names))
        signs = np.where(weights >= 0, 1.0, -1.0).astype(np.float32)
        bconv = op1.binary_convolution(
            fq, ops.constant(_u1_filters(ov, signs)), attrs["strides"], attrs["pads_begin"],
            attrs["pads_end"], attrs["dilations"], "xnor-popcount", 0.0,
            attrs.get("auto_pad", "explicit"),
        )
        out = ops.multiply(bconv, ops.constant(magnitude.reshape(1, -1, 1, 1)))
        out.set_friendly_name(conv.get_friendly_name())
        conv.output(0).replace(out.output(0))
        count += 1
    model.validate_nodes_and_infer_types()
    return count, kept
