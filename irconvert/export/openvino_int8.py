"""int8 for the layers a binary network keeps in full precision, in OpenVINO IR.

IR-Net keeps the stem, the 1x1 downsample convolutions and the classifier in
full precision. Once the binary convolutions run on OpenVINO's bit-packed
kernel these layers are most of the time left (the 7x7 stem of ResNet-18
alone is a third of it), so, as Larq Compute Engine does, they can run in
int8 on the CPU's VNNI kernels instead. :func:`quantize_kept_layers` rewrites
each such ``Convolution``/``MatMul`` of an :mod:`openvino_export` graph as::

    FakeQuantize(x, lo, hi, lo, hi, levels=256)              # activations, per tensor
      -> Convolution/MatMul(., Multiply(Convert(w_i8), s_c))  # weights int8, per channel

- Weights: per output channel, symmetric: ``s_c = max|w_c| / 64``,
  ``w_i8 = round(w / s_c)`` in [-64, 64] (stored as ``i8`` in the ``.bin``,
  4x smaller than fp32). The CPU plugin's low-precision transformations read
  ``Convert + Multiply`` on a constant as int8 weights with a dequantization
  scale. Not [-127, 127]: CPUs without VNNI (AVX2, e.g. AMD Zen 3 and Intel
  before Cascade Lake) multiply ``u8`` by ``i8`` with ``vpmaddubsw``, which
  adds the products in pairs into int16 and saturates: 2 * 255 * 127
  overflows 32767, and a layer's output was measured wrong by half on such a
  CPU. Within +-64 every pair fits (2 * 255 * 64 = 32640) on every CPU, as
  OpenVINO's own quantizer does with its overflow fix, at the cost of one
  bit of weight precision (docs/export.md measures it).
- Activations: one range per tensor, the min/max over the calibration images
  (:func:`calibrate`), widened to hold 0 and nudged so that 0 is exactly a
  level (a zero-padded border stays exactly 0). A non-negative range gives
  ``u8`` inputs; a signed one ``u8`` with a zero point, both of which the
  plugin's int8 convolutions take.

A ``MaxPool`` fed by a kept layer (ResNet-18's stem -> BatchNorm -> clamp
-> max-pool) gets its input through a 256-level FakeQuantize as well
(:func:`int8_pools`, :func:`quantize_pool_inputs`; range calibrated the same
way). The plugin fuses that FakeQuantize into the kept layer, which then
writes ``u8`` instead of fp32, and the max-pool runs on ``u8``: on an AMX
Xeon (batch 32, one thread) the ResNet-18's stem plus max-pool went from 34.1
to 15.3 ms, the whole binary + int8 model from 136.6 to 117.5 ms.
Max-pooling commutes with the (monotonic) quantization, so this is the same
as quantizing the pool's output: the tensor the next blocks read (their
residual and their sign) carries int8 rounding (at most half a level), one
more approximation of the int8 graph. A max-pool after a binary or float
layer is left alone: there the FakeQuantize would be a pass of its own.

Binary convolutions stay ``BinaryConvolution`` (their ``levels=2``
FakeQuantize is untouched). Binary-weight layers that fell back to float
convolutions (1W/32A layers, layers the kernel cannot run) stay fp32: their
weights are exact as they are.

The int8 graph is an approximation of the model, unlike the rest of the
export: ``benchmarks/export_parity.py`` measures how many test images change
their top-1. Once a graph holds 256-level FakeQuantizes, the CPU plugin runs
its low-precision pipeline over the whole graph; this also re-orders a few
float operations of the binary blocks (differences of ~1e-6, no measured sign
flip), so even the binary part is then not bit-exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from irconvert.errors import ExportError

__all__ = [
    "KeptLayer",
    "LayerPrecision",
    "calibrate",
    "const_value",
    "int8_pools",
    "kept_layers",
    "pool_names",
    "quantize_kept_layers",
    "quantize_pool_inputs",
    "runtime_precisions",
]

LEVELS = 256
# The largest |int8 weight|: see the module doc (u8 x i8 pairs must fit int16).
WEIGHT_QMAX = 64
CALIBRATION_BATCH = 32


@dataclass
class KeptLayer:
    """A full-precision ``Convolution``/``MatMul`` of the graph that int8 can run."""

    op: Any  # the OpenVINO node
    name: str  # the PyTorch module name when it could be matched, else the node's
    role: str  # "stem", "1x1 downsample", "classifier", "convolution", "linear"
    shape: str  # e.g. "3->64 7x7/2"


@dataclass
class LayerPrecision:
    """How one layer of an export runs, and why (the export report)."""

    name: str
    precision: str  # "int8", "binary" or "fp32"
    why: str


def const_value(node: Any) -> np.ndarray | None:
    """The value of a ``Constant`` (behind any ``Convert`` ops), or None."""
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    if node.get_type_name() != "Constant":
        return None
    return np.asarray(node.get_data())


def _is_binary_weight(w: np.ndarray) -> bool:
    """``+-a_c``: a binary weight times its scale (and a folded BatchNorm)."""
    flat = np.abs(w.reshape(w.shape[0], -1))
    return flat.shape[1] > 1 and bool(np.all(flat == flat[:, :1]))


def _reads_sign(op: Any) -> bool:
    return bool(op.input_value(0).get_node().get_type_name() == "Select")


def _weight_axes(op: Any, w: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``(weights as [out, ...], output-channel axis)`` of a Convolution/MatMul."""
    if op.get_type_name() == "Convolution" and w.ndim == 4:
        return w, 0
    if op.get_type_name() == "MatMul" and w.ndim == 2:
        attrs = op.get_attributes()
        if attrs.get("transpose_a"):
            return None
        return (w, 0) if attrs.get("transpose_b") else (w.T, 1)
    return None


def _signature(kind: str, w: np.ndarray, stride: Sequence[int]) -> tuple[Any, ...]:
    return (kind, *w.shape, *tuple(stride))


def _torch_names(frozen: nn.Module) -> dict[tuple[Any, ...], list[str]]:
    """The model's full-precision Conv2d/Linear names, by (kind, weight shape, stride)."""
    from irconvert.export.freeze import binary_layers

    binary = set(binary_layers(frozen))
    out: dict[tuple[Any, ...], list[str]] = {}
    for name, m in frozen.named_modules():
        if name in binary:
            continue
        if type(m) is nn.Conv2d and m.groups == 1:
            key = _signature("conv", m.weight.detach().numpy(), m.stride)
        elif type(m) is nn.Linear:
            key = _signature("linear", m.weight.detach().numpy(), ())
        else:
            continue
        out.setdefault(key, []).append(name)
    return out


def _describe(op: Any, w: np.ndarray, is_first: bool, is_last: bool) -> tuple[str, str]:
    if op.get_type_name() == "MatMul":
        return ("classifier" if is_last else "linear"), f"{w.shape[1]}->{w.shape[0]}"
    kh, kw = w.shape[2:]
    stride = op.get_attributes()["strides"]
    shape = f"{w.shape[1]}->{w.shape[0]} {kh}x{kw}" + (f"/{stride[0]}" if stride[0] > 1 else "")
    if is_first:
        return "stem", shape
    if (kh, kw) == (1, 1):
        return "1x1 downsample" if stride[0] > 1 else "1x1 convolution", shape
    return "convolution", shape


def kept_layers(ov_model: Any, frozen: nn.Module | None = None) -> tuple[
        list[KeptLayer], list[LayerPrecision]]:
    """The graph's full-precision layers: ``(int8 candidates, others that stay fp32)``.

    A candidate is a ``Convolution`` (groups 1) or 2-D ``MatMul`` with
    constant weights that is not a binary layer (it neither reads
    ``sign(x)`` nor has ``+-a_c`` weights). ``frozen`` (the frozen PyTorch
    model) gives the layers their module names; without it they keep the
    node names.
    """
    names = _torch_names(frozen) if frozen is not None else {}
    found: list[tuple[Any, np.ndarray]] = []
    others: list[LayerPrecision] = []
    for op in ov_model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "MatMul", "GroupConvolution"):
            continue
        w = const_value(op.input_value(1).get_node())
        if w is None:
            continue
        if _reads_sign(op) or _is_binary_weight(w):
            continue  # a binary layer on a float kernel: reported as a fallback
        axes = _weight_axes(op, w)
        if axes is None:
            others.append(LayerPrecision(op.get_friendly_name(), "fp32",
                                         f"{kind} of this shape has no int8 path here"))
            continue
        found.append((op, axes[0]))
    params = {op.get_friendly_name() for op in ov_model.get_parameters()}
    last_matmul = max((i for i, (op, _) in enumerate(found) if op.get_type_name() == "MatMul"),
                      default=-1)
    layers = []
    for i, (op, w) in enumerate(found):
        source = op.input_value(0).get_node()
        first = source.get_type_name() == "Parameter" and source.get_friendly_name() in params
        role, shape = _describe(op, w, first, i == last_matmul)
        kind = "linear" if op.get_type_name() == "MatMul" else "conv"
        stride = () if kind == "linear" else op.get_attributes()["strides"]
        queue = names.get(_signature(kind, w, stride))
        name = queue.pop(0) if queue else op.get_friendly_name()
        layers.append(KeptLayer(op, name, role, shape))
    return layers, others


def calibrate(ov_model: Any, ops: Sequence[Any], images: np.ndarray, *,
              compile_fn: Callable[[Any, int], Any]) -> list[tuple[float, float]]:
    """Min and max of each op's first input over ``images`` (float32 NCHW, preprocessed).

    ``ops`` are nodes of ``ov_model`` (the kept layers' ``op`` and the
    :func:`int8_pools`). Runs a copy of the fp32 graph with their inputs
    as extra outputs, ``CALIBRATION_BATCH`` images at a time (the last batch
    is padded with repeats, which cannot change a min or a max).
    ``compile_fn(model, batch)`` compiles for the CPU.
    """
    if not len(images):
        raise ExportError("int8 calibration needs at least one image")
    model = ov_model.clone()
    by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    first = len(model.outputs)
    model.add_outputs([by_name[op.get_friendly_name()].input_value(0) for op in ops])
    batch = min(CALIBRATION_BATCH, len(images))
    compiled = compile_fn(model, batch)
    lo = np.full(len(ops), np.inf)
    hi = np.full(len(ops), -np.inf)
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, images[:batch - len(chunk)]])
        result = compiled(np.ascontiguousarray(chunk, dtype=np.float32))
        for i in range(len(ops)):
            value = np.asarray(result[first + i])
            lo[i] = min(lo[i], float(value.min()))
            hi[i] = max(hi[i], float(value.max()))
    if not np.all(np.isfinite(lo) & np.isfinite(hi)):
        raise ExportError("int8 calibration saw a NaN or inf activation")
    return list(zip(lo.tolist(), hi.tolist(), strict=True))


def activation_range(lo: float, hi: float) -> tuple[float, float]:
    """A 256-level range holding ``[lo, hi]`` and 0, with 0 exactly on a level."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        return 0.0, 1.0  # a constant-zero input: any range is exact
    scale = (hi - lo) / (LEVELS - 1)
    zero = round(-lo / scale)
    return -zero * scale, (LEVELS - 1 - zero) * scale


def int8_weights(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric ``(q int8, scale)`` with ``w ~ q * scale`` along ``axis``."""
    keep = [1] * w.ndim
    keep[axis] = w.shape[axis]
    amax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(1).reshape(keep)
    scale = np.where(amax > 0, amax / WEIGHT_QMAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)
    return q, scale


def quantize_kept_layers(layers: Sequence[KeptLayer],
                         ranges: Sequence[tuple[float, float]]) -> None:
    """Put each layer's activations and weights through int8 (in place; see the module doc).

    The caller revalidates the model (``validate_nodes_and_infer_types``).
    """
    import openvino.opset13 as ops

    for layer, (lo, hi) in zip(layers, ranges, strict=True):
        op = layer.op
        w = const_value(op.input_value(1).get_node())
        assert w is not None  # kept_layers only returns constant weights
        axis = 1 if op.get_type_name() == "MatMul" and not op.get_attributes()["transpose_b"] \
            else 0
        q, scale = int8_weights(w.astype(np.float32), axis)
        weights = ops.multiply(ops.convert(ops.constant(q), np.float32), ops.constant(scale))
        _quantize_input(op, lo, hi)
        op.input(1).replace_source_output(weights.output(0))


def _quantize_input(op: Any, lo: float, hi: float) -> None:
    """``op`` reads its first input through a 256-level FakeQuantize over ``[lo, hi]``."""
    import openvino.opset13 as ops

    low, high = (np.array(v, np.float32) for v in activation_range(lo, hi))
    fq = ops.fake_quantize(op.input_value(0), low, high, low, high, LEVELS)
    fq.set_friendly_name(f"{op.get_friendly_name()}/int8_input")
    op.input(0).replace_source_output(fq.output(0))


# Ops between a kept layer and a max-pool that the plugin fuses into the
# layer's output (a folded BatchNorm's Multiply/Add, the activation).
_FUSABLE = ("Multiply", "Add", "Subtract", "Clamp", "Relu")


def _fed_by(op: Any, kept: set[str]) -> bool:
    """Whether ``op`` reads a kept layer's output through fusable per-channel ops alone."""
    node = op.input_value(0).get_node()
    while True:
        if len(node.output(0).get_target_inputs()) != 1:
            return False  # the value is read elsewhere too: it stays fp32 anyway
        if node.get_friendly_name() in kept:
            return True
        if node.get_type_name() not in _FUSABLE:
            return False
        variable = [node.input_value(i).get_node() for i in range(node.get_input_size())
                    if const_value(node.input_value(i).get_node()) is None]
        if len(variable) != 1:
            return False  # two tensors: a residual sum, not a per-channel op
        node = variable[0]


def int8_pools(ov_model: Any, layers: Sequence[KeptLayer]) -> list[Any]:
    """The ``MaxPool`` nodes fed by a kept layer (see the module doc), in graph order."""
    kept = {layer.op.get_friendly_name() for layer in layers}
    return [op for op in ov_model.get_ordered_ops()
            if op.get_type_name() == "MaxPool" and _fed_by(op, kept)]


def pool_names(ov_model: Any, frozen: nn.Module | None, pools: Sequence[Any]) -> list[str]:
    """The PyTorch module names of ``pools``, else their node names.

    Graph and model list their max-pools in the same order; the names are
    matched by that order when the counts agree (a functional
    ``F.max_pool2d`` has no module, and then the node names are kept).
    """
    graph = [op.get_friendly_name() for op in ov_model.get_ordered_ops()
             if op.get_type_name() == "MaxPool"]
    modules = [name for name, m in (frozen.named_modules() if frozen is not None else [])
               if isinstance(m, nn.MaxPool2d)]
    by_node = dict(zip(graph, modules, strict=True)) if len(graph) == len(modules) else {}
    return [by_node.get(op.get_friendly_name(), op.get_friendly_name()) for op in pools]


def quantize_pool_inputs(pools: Sequence[Any], ranges: Sequence[tuple[float, float]]) -> None:
    """Put each max-pool's input through a 256-level FakeQuantize (in place).

    The caller revalidates the model (``validate_nodes_and_infer_types``).
    """
    for pool, (lo, hi) in zip(pools, ranges, strict=True):
        _quantize_input(pool, lo, hi)


def runtime_precisions(compiled: Any) -> dict[str, tuple[str, str, str]]:
    """``{original layer name: (layer type, runtime precision, kernel)}`` of a compiled model.

    The CPU plugin's runtime graph lists, for each node it runs, the
    original layers fused into it (``originalLayersNames``); int8 layers show
    as ``Convolution``/``FullyConnected`` with precision ``u8`` or ``i8``.
    """
    out: dict[str, tuple[str, str, str]] = {}
    for node in compiled.get_runtime_model().get_ops():
        info = node.get_rt_info()

        def get(key: str, info: Any = info) -> str:
            return str(info[key].astype(str)) if key in info else ""

        row = (get("layerType"), get("runtimePrecision"), get("primitiveType"))
        for name in get("originalLayersNames").split(","):
            if name and name not in out:
                out[name] = row
    return out
