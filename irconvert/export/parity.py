"""Layer-by-layer parity of an exported model with PyTorch, at the binary activations.

Comparing logits alone cannot tell a wrong export from a harmless flip: one
activation within rounding of its threshold takes the other sign in an
engine that sums in another order, and every layer after it moves. So the
check compares the bits themselves, layer by layer, on the same input:

1. Run the export with every ``<layer>/sign`` tensor
   (:mod:`irconvert.export.sign_names`) and the input it is computed from
   as extra outputs: onnxruntime returns the signs; for OpenVINO, whose
   ``BinaryConvolution`` reads a ``FakeQuantize``, the check reads the
   FakeQuantize's input and applies its threshold (``x > t``,
   FakeQuantize's own rule).
2. Run the frozen PyTorch model, recording each layer's bits and
   pre-activation ``x - b``.
3. At the first layer (in call order) whose bits differ, every differing bit
   must have ``|x - b| <= margin`` (:data:`MARGIN_RTOL` times the layer's
   largest ``|x - b|``, at least 1), and the engine's input ``x'`` to that
   sign must differ from PyTorch's ``x``: with the same input, only the
   threshold can be to blame (a threshold that reaches the engine changed by
   a subnormal amount flips every ReLU zero of its channel, each of them
   "within the margin"). Near-threshold flips are counted and
   *replayed*: PyTorch runs again with those bits set as the engine set them,
   so that the layers after it are judged on the same inputs. A differing bit
   beyond the margin fails the check at once.
4. When every layer agrees, the logits must agree within
   ``LOGIT_ATOL + LOGIT_RTOL * max|logit|``.

An explanation ("rounding flipped a sign") is accepted only where this
replay proves it on that very input.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from irconvert.export.freeze import FrozenBinaryLayer, FrozenBinaryLinear
from irconvert.export.sign_names import SIGN_SUFFIX, sign_layer

__all__ = ["LayerParity", "ParityReport", "check_parity", "engine_signs"]

MARGIN_RTOL = 1e-5
LOGIT_ATOL = 1e-4
LOGIT_RTOL = 1e-4


@dataclass
class LayerParity:
    """One binary layer: how many bits, how many flipped near the threshold, how many not."""

    layer: str
    bits: int
    near: int = 0  # replayed: within the margin of the threshold
    far: int = 0  # beyond the margin: an export error
    worst: float = 0.0  # the largest |x - b| of a differing bit
    margin: float = 0.0


@dataclass
class ParityReport:
    """The layer-by-layer comparison of one export with PyTorch."""

    engine: str
    layers: list[LayerParity] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # layers the engine graph does not name
    logit_diff: float = 0.0
    logit_tol: float = 0.0
    failure: str = ""

    @property
    def ok(self) -> bool:
        return not self.failure

    @property
    def near(self) -> int:
        return sum(row.near for row in self.layers)

    def summary(self) -> str:
        bits = sum(row.bits for row in self.layers)
        head = (f"{self.engine}: {len(self.layers)} binary layers, {bits} bits, "
                f"{self.near} near-threshold flips replayed, max |logit diff| "
                f"{self.logit_diff:.3g} (tolerance {self.logit_tol:.3g})")
        return head + (f"; FAILED: {self.failure}" if self.failure else "; parity holds")


def _engine_of(path: Path) -> str:
    from irconvert.export.formats import format_of

    return format_of(path).name


Signs = dict[str, np.ndarray]


def engine_signs(path: str | os.PathLike[str], x: np.ndarray,
                 threads: int = 1) -> tuple[Signs, Signs, np.ndarray]:
    """``(bits, inputs, logits)`` of an ONNX or OpenVINO export on ``x``.

    ``bits[layer]`` is True for +1; ``inputs[layer]`` is the tensor the
    engine computed that sign from, before any threshold (the layer's input
    ``x'``, where the graph has it).
    """
    p = Path(path)
    fmt = _engine_of(p)
    if fmt == "onnx":
        return _onnx_signs(p, x, threads)
    if fmt == "openvino":
        return _openvino_signs(p / "model.xml" if p.is_dir() else p, x, threads)
    raise ValueError(f"{p}: the layer-by-layer check runs ONNX and OpenVINO exports")


def _onnx_signs(path: Path, x: np.ndarray, threads: int) -> tuple[Signs, Signs, np.ndarray]:
    import onnx
    import onnxruntime as ort

    from irconvert.export.engines import ORT_DISABLED, ort_options

    proto = onnx.load(str(path))
    producers = {out: node for node in proto.graph.node for out in node.output}
    taps: list[tuple[str, str]] = []  # sign tensor, the input it is computed from
    for node in proto.graph.node:
        if node.output and sign_layer(node.output[0]):
            before = producers[node.input[0]].input[0]  # Where(GreaterOrEqual(v, 0), ...)
            sub = producers.get(before)
            taps.append((node.output[0], sub.input[0] if sub is not None
                         and sub.op_type == "Sub" else before))
    wanted = list(dict.fromkeys(name for tap in taps for name in tap))
    have = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n)
                              for n in wanted if n not in have)
    session = ort.InferenceSession(proto.SerializeToString(), ort_options(threads),
                                   providers=["CPUExecutionProvider"],
                                   disabled_optimizers=ORT_DISABLED)
    first = proto.graph.output[0].name
    outs = dict(zip([first, *wanted], session.run([first, *wanted],
                                                  {session.get_inputs()[0].name: x}),
                    strict=True))
    bits = {str(sign_layer(sign)): np.asarray(outs[sign]) > 0 for sign, _ in taps}
    inputs = {str(sign_layer(sign)): np.asarray(outs[raw]) for sign, raw in taps}
    return bits, inputs, np.asarray(outs[first])


def _openvino_signs(xml: Path, x: np.ndarray, threads: int) -> tuple[Signs, Signs, np.ndarray]:
    from irconvert.export.openvino_export import compile_openvino, import_openvino
    from irconvert.export.openvino_int8 import const_value

    ov = import_openvino()
    model = ov.Core().read_model(str(xml))
    # layer, the tensor its bits are read from, that tensor's FakeQuantize
    # threshold (None: it holds +-1), the input before any threshold
    taps: list[tuple[str, Any, np.ndarray | None, Any]] = []
    for node in model.get_ordered_ops():
        kind = node.get_type_name()
        # OpenVINO merges the signs of layers that compute the same thing:
        # one node may carry the names of several
        named = sorted({n for n in node.output(0).get_names() if sign_layer(n)}
                       | {n for n in [node.get_friendly_name()] if sign_layer(n)})
        if kind == "FakeQuantize" and named:
            # FakeQuantize's own output feeds BinaryConvolution; as an extra
            # output it crashes the CPU plugin, so its input is read instead.
            threshold = const_value(node.input_value(1).get_node())
            source = node.input_value(0)
            taps += [(name, source, threshold, source) for name in named]
        elif kind == "Select" and named:  # a binary layer kept as a float layer of sign(x)
            value = node.input_value(0).get_node().input_value(0)
            op = value.get_node()
            if op.get_type_name() in ("Add", "Subtract") and const_value(
                    op.input_value(1).get_node()) is not None:
                value = op.input_value(0)
            taps += [(name, node.output(0), None, value) for name in named]
    def key(port: Any) -> tuple[str, int]:
        return port.get_node().get_friendly_name(), port.get_index()

    model.add_outputs([t for tap in taps for t in (tap[1], tap[3])])
    # add_outputs skips ports that are outputs already: find each by its source
    index = {key(result.get_node().input_value(0)): i for i, result in enumerate(model.outputs)}
    compiled = compile_openvino(model, int(x.shape[0]), threads)
    outs = compiled(x)

    def read(port: Any) -> np.ndarray:
        return np.asarray(outs[compiled.outputs[index[key(port)]]])

    bits: Signs = {}
    inputs: Signs = {}
    for name, port, threshold, before in taps:
        layer = str(sign_layer(name))
        bits[layer] = read(port) > (threshold if threshold is not None else 0)
        inputs[layer] = read(before)
    return bits, inputs, np.asarray(outs[compiled.outputs[0]])


def _torch_signs(frozen: nn.Module, x: Tensor, forced: dict[str, tuple[np.ndarray, np.ndarray]],
                 ) -> tuple[dict[str, tuple[np.ndarray, ...]], list[str], np.ndarray]:
    """``({layer: (bits, |x - b|, x)}, call order, logits)``, with ``forced`` bits set."""
    record: dict[str, tuple[np.ndarray, ...]] = {}
    order: list[str] = []
    calls: Counter[str] = Counter()

    def hook(name: str, layer: FrozenBinaryLayer) -> Any:
        def pre(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            calls[name] += 1
            key = name if calls[name] == 1 else f"{name}#{calls[name]}"
            order.append(key)
            inp = args[0]
            b = layer.act_threshold
            dim = -1 if isinstance(layer, FrozenBinaryLinear) else 1
            shape = [1] * inp.dim()
            shape[dim] = -1
            base = (b.reshape(shape).to(inp.dtype) if b is not None
                    else torch.zeros((), dtype=inp.dtype))
            pre = inp - base  # the frozen layer's own arithmetic (subtract_threshold)
            bits_now, margin = (pre >= 0).numpy(), pre.abs().numpy()
            if key not in forced:
                record[key] = (bits_now, margin, inp.numpy())
                return None
            record[key] = (np.where(forced[key][0], forced[key][1], bits_now), margin,
                           inp.numpy())
            mask, bits = (torch.from_numpy(a) for a in forced[key])
            # b + 1 and b - 1 take the engine's sign for any |b| < 2**23
            replayed = torch.where(mask, torch.where(bits, base + 1, base - 1), inp)
            return (replayed, *args[1:])
        return pre

    handles = [m.register_forward_pre_hook(hook(n, m)) for n, m in frozen.named_modules()
               if isinstance(m, FrozenBinaryLayer) and m.binary_act]
    try:
        with torch.no_grad():
            out = frozen(x)
    finally:
        for handle in handles:
            handle.remove()
    logits = out if isinstance(out, Tensor) else out[0]  # (logits, aux...) outputs
    return record, order, logits.numpy()


def check_parity(frozen: nn.Module, path: str | os.PathLike[str], x: np.ndarray, *,
                 threads: int = 1) -> ParityReport:
    """Compare an ONNX or OpenVINO export with its frozen PyTorch model, layer by layer.

    Args:
        frozen: the model the file was exported from (:func:`irconvert.export.freeze`).
        path: the ``.onnx`` file or OpenVINO IR (``.xml`` or its folder).
        x: float32 NCHW input(s).

    Returns:
        the report; ``report.ok`` is False, with the reason, when a bit
        differs beyond the margin, a layer is not found in the graph, or the
        logits disagree after the replay.
    """
    frozen = frozen.eval()
    engine, values, engine_logits = engine_signs(path, x, threads)
    report = ParityReport(_engine_of(Path(path)))
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    forced: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows: dict[str, LayerParity] = {}
    for _ in range(len(engine) + 2):  # each round settles at least one layer
        record, order, logits = _torch_signs(frozen, inputs, forced)
        report.missing = [name for name in order if name not in engine]
        diverged = None
        for name in order:
            bits, margin, x_torch = record[name]
            row = rows.setdefault(name, LayerParity(name, int(bits.size)))
            row.margin = MARGIN_RTOL * max(1.0, float(margin.max(initial=0.0)))
            if name not in engine:
                continue
            theirs = engine[name].reshape(bits.shape)
            differ = bits != theirs
            if not differ.any():
                continue
            x_engine = values.get(name)
            same = (np.zeros_like(differ) if x_engine is None
                    else x_engine.reshape(bits.shape) == x_torch)
            far = differ & ((margin > row.margin) | same)
            row.worst = max(row.worst, float(margin[differ].max()))
            if far.any():
                row.far = int(far.sum())
                same_far = int((far & same).sum())
                report.failure = (
                    f"{name}: {row.far} of {row.bits} bits differ from PyTorch's, "
                    + (f"{same_far} of them with the very same input (the threshold is wrong)"
                       if same_far else f"up to {row.worst:.3g} from the threshold "
                       f"(margin {row.margin:.3g})"))
                diverged = name
                break
            row.near += int(differ.sum())
            mask, _ = forced.get(name, (np.zeros_like(differ), theirs))
            forced[name] = (mask | differ, theirs)
            diverged = name
            break
        report.layers = [rows[name] for name in order if name in rows]
        if report.failure:
            return report
        if diverged is None:
            scale = float(np.abs(logits).max(initial=0.0))
            report.logit_diff = float(np.abs(logits - engine_logits).max(initial=0.0))
            report.logit_tol = LOGIT_ATOL + LOGIT_RTOL * scale
            if report.missing:
                report.failure = (f"{len(report.missing)} binary layers have no named sign in "
                                  f"the graph (first: {report.missing[0]}{SIGN_SUFFIX})")
            elif report.logit_diff > report.logit_tol:
                report.failure = (f"every bit agrees, but the logits differ by "
                                  f"{report.logit_diff:.3g} (tolerance {report.logit_tol:.3g})")
            return report
    report.failure = "the replay of near-threshold flips did not settle"
    return report
