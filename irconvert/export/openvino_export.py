"""Export a binarized model to OpenVINO IR (xml + bin) with real binary convolutions.

How the graph is built: the frozen model is exported to ONNX
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

With calibration images (``calibration=``, ``irconvert export --data``), the
layers kept in full precision (stem, downsample, classifier) become int8:
see :mod:`irconvert.export.openvino_int8`. Every export reports each layer
as binary, int8 or fp32 with the reason (:attr:`OpenVinoExport.layers`).

The IR keeps a dynamic batch axis; the CPU plugin's BinaryConvolution needs
static shapes, so :func:`compile_openvino` reshapes to a concrete batch first.

The input preprocessing (normalisation, input size, eval resize/crop), when
given, is recorded as JSON in the model's ``rt_info`` under
``irconvert/preprocessing`` (see :mod:`irconvert.export.meta`).
"""

from __future__ import annotations

import os
import tempfile
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from irconvert.errors import ExportError, MissingDependencyError
from irconvert.export.files import atomic_dir, atomic_file, check_output
from irconvert.export.freeze import FrozenBinaryConv2d, binary_layers, freeze
from irconvert.export.meta import OPENVINO_PATH, check_metadata, encode_metadata
from irconvert.export.onnx_export import DEFAULT_OPSET, to_onnx_bytes
from irconvert.export.openvino_int8 import (
    LayerPrecision,
    calibrate,
    const_value,
    kept_layers,
    quantize_kept_layers,
    runtime_precisions,
)
from irconvert.export.sign_names import sign_layer

__all__ = [
    "OpenVinoExport",
    "OpenVinoGraph",
    "binary_conv_layers",
    "compile_openvino",
    "export_openvino",
    "import_openvino",
    "to_openvino_model",
]

_TINY = np.finfo(np.float32).tiny
_THRESHOLD = -_TINY
XML_NAME = "model.xml"


def import_openvino() -> Any:
    """The ``openvino`` module, or MissingDependencyError with the install line."""
    try:
        import openvino
    except ImportError:
        raise MissingDependencyError(
            "OpenVINO export needs the openvino package; pip install 'irconvert[openvino]'"
        ) from None
    return openvino


@dataclass
class OpenVinoExport:
    """What :func:`export_openvino` wrote and how each layer will run.

    ``layers`` lists every binary and full-precision layer with its
    precision (``binary``, ``int8`` or ``fp32``) and the reason;
    ``int8_layers`` counts the int8 ones; ``calibration`` names the images
    the int8 ranges came from (None without int8).
    """

    xml: Path
    bin: Path
    binary_convolutions: int
    fallback: dict[str, str] = field(default_factory=dict)
    bytes: int = 0
    layers: list[LayerPrecision] = field(default_factory=list)
    int8_layers: int = 0
    calibration: str | None = None


@dataclass
class OpenVinoGraph:
    """An ``ov.Model`` built by :func:`to_openvino_model`, with its layer report."""

    model: Any
    binary_convolutions: int
    fallback: dict[str, str] = field(default_factory=dict)
    layers: list[LayerPrecision] = field(default_factory=list)
    int8_layers: int = 0


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


def _replace_binary_convs(ov: Any, model: Any) -> tuple[int, dict[str, str]]:
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


def to_openvino_model(
    model: nn.Module, *, input_size: tuple[int, ...] | None = None,
    calibration: np.ndarray | None = None, calibration_source: str = "",
    int8_off_reason: str = "no calibration data (--data) given",
) -> OpenVinoGraph:
    """The OpenVINO graph of a binarized model, with how each layer will run.

    Args:
        model: a model converted by :func:`irconvert.binarize_` (or frozen).
        input_size: ``(C, H, W)`` for tracing.
        calibration: preprocessed float32 NCHW images; when given, the layers
            kept in full precision (stem, downsample, classifier) become int8
            (:mod:`irconvert.export.openvino_int8`) with activation ranges
            measured on them. None keeps them fp32 (exact).
        calibration_source: where the images came from, for the report.
        int8_off_reason: why the kept layers stay fp32 when ``calibration`` is None.

    Raises:
        MissingDependencyError: openvino is not installed.
        ExportError: no binarized layer, or a model ONNX cannot express.
    """
    ov = import_openvino()
    frozen = freeze(model) if not binary_layers(model) or _has_ir(model) else model
    data, _ = to_onnx_bytes(normal_thresholds(frozen), opset=DEFAULT_OPSET,
                            input_size=input_size)
    with tempfile.TemporaryDirectory(prefix="irconvert-ov-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        onnx_path.write_bytes(data)
        try:
            ov_model = ov.convert_model(str(onnx_path))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ExportError(f"OpenVINO cannot read the exported graph: {first}") from None
    count, crashing = _replace_binary_convs(ov, ov_model)
    fallback = {**fallback_reasons(frozen), **crashing}
    report = [LayerPrecision(name, "binary", f"float kernel: {fallback[name]}"
                             if name in fallback else "BinaryConvolution (bit-packed kernel)")
              for name in binary_layers(frozen)]
    # crashing-producer fallbacks are named by graph node, not module
    report += [LayerPrecision(name, "binary", f"float kernel: {why}")
               for name, why in crashing.items()]
    kept, others = kept_layers(ov_model, frozen)
    int8 = 0
    if calibration is not None and kept:
        ranges = calibrate(ov_model, kept, calibration,
                           compile_fn=lambda m, batch: compile_openvino(m, batch))
        quantize_kept_layers(kept, ranges)
        ov_model.validate_nodes_and_infer_types()
        ran = runtime_precisions(compile_openvino(ov_model, 1))
        for layer in kept:
            _, precision, kernel = _runtime_row(ran, layer.op.get_friendly_name())
            really = precision in ("u8", "i8")
            int8 += really
            why = f"{layer.role} {layer.shape}: int8 weights per channel, calibrated inputs"
            report.append(LayerPrecision(layer.name, "int8" if really else "fp32",
                                         f"{why}; {kernel}" if really
                                         else f"{why}, but this CPU runs it in {precision}"))
    else:
        report += [LayerPrecision(layer.name, "fp32", f"{layer.role} {layer.shape}: "
                                  f"{int8_off_reason}") for layer in kept]
    report += others
    return OpenVinoGraph(ov_model, count, fallback, report, int8)


def _runtime_row(ran: dict[str, tuple[str, str, str]], name: str) -> tuple[str, str, str]:
    """The compiled node that runs ``name`` (the plugin may rename it ``name/...``)."""
    if name in ran:
        return ran[name]
    rows = [row for key, row in ran.items() if key.startswith(name + "/")
            and row[0] in ("Convolution", "FullyConnected", "MatMul")]
    return rows[0] if rows else ("", "", "")


def _has_ir(model: nn.Module) -> bool:
    from irconvert.nn import IRLayer

    return any(isinstance(m, IRLayer) for m in model.modules())


def export_openvino(
    model: nn.Module, path: str | os.PathLike[str], *,
    input_size: tuple[int, ...] | None = None, force: bool = False,
    metadata: dict[str, Any] | None = None, calibration: np.ndarray | None = None,
    calibration_source: str = "", int8_off_reason: str = "no calibration data (--data) given",
    check: bool = True, batch: int | None = None,
) -> OpenVinoExport:
    """Write OpenVINO IR for a binarized model.

    Args:
        model: a model converted by :func:`irconvert.binarize_` (or already frozen).
        path: a directory (gets ``model.xml`` + ``model.bin``) or an ``.xml``
            path (the ``.bin`` goes next to it). Written aside, renamed into place.
        input_size: ``(C, H, W)``; the model's ``irconvert_input_size`` or
            ``(3, 224, 224)`` when None.
        force: overwrite existing output.
        metadata: the input preprocessing to record (``normalization``,
            ``input_size``, ``eval_resize``, ``eval_crop``; see
            :mod:`irconvert.export.meta`) in ``rt_info``; None records none.
        calibration, calibration_source, int8_off_reason: int8 for the layers
            kept in full precision; see :func:`to_openvino_model`.
        check: before the files are renamed into place, run the written IR
            once (batch 1) in a child process: an engine crash on the graph
            is then an ``ExportError`` and nothing is written.
        batch: a static batch size, so that plain OpenVINO
            (``compile_model(read_model(xml), "CPU")``) compiles the IR as it
            is: its ``BinaryConvolution`` kernel refuses dynamic shapes. None
            keeps the batch axis dynamic (:func:`compile_openvino` reshapes).

    Raises:
        MissingDependencyError: openvino is not installed.
        ExportError: see :func:`to_openvino_model`; bad metadata; the output
            exists; or (``check``) OpenVINO crashes running the exported model.
    """
    ov = import_openvino()
    preprocessing = check_metadata(metadata)
    target = Path(path)
    as_xml = target.suffix == ".xml"
    check_output(target, force, directory=not as_xml)
    if as_xml:
        check_output(target.with_suffix(".bin"), force)
    graph = to_openvino_model(model, input_size=input_size, calibration=calibration,
                              calibration_source=calibration_source,
                              int8_off_reason=int8_off_reason)
    ov_model = graph.model
    if batch is not None:
        dims = [batch] + [d.get_length() for d in list(ov_model.input(0).get_partial_shape())[1:]]
        ov_model.reshape({ov_model.input(0).get_any_name(): dims})
    if preprocessing:
        ov_model.set_rt_info(encode_metadata(preprocessing), list(OPENVINO_PATH))
    if as_xml:
        xml, binf = target, target.with_suffix(".bin")
        with atomic_file(binf) as tmp_bin, atomic_file(xml) as tmp_xml:
            staged = tmp_xml.with_suffix(".xml")  # save_model names the .bin after the .xml
            try:
                _save(ov, ov_model, staged)
                if check:
                    _check_runs(staged, ov_model, target)
                staged.replace(tmp_xml)
                staged.with_suffix(".bin").replace(tmp_bin)
            finally:
                staged.unlink(missing_ok=True)
                staged.with_suffix(".bin").unlink(missing_ok=True)
    else:
        with atomic_dir(target) as tmp_dir:
            _save(ov, ov_model, tmp_dir / XML_NAME)
            if check:
                _check_runs(tmp_dir / XML_NAME, ov_model, target)
        xml, binf = target / XML_NAME, target / "model.bin"
    return OpenVinoExport(xml=xml, bin=binf, binary_convolutions=graph.binary_convolutions,
                          fallback=graph.fallback, bytes=xml.stat().st_size + binf.stat().st_size,
                          layers=graph.layers, int8_layers=graph.int8_layers,
                          calibration=calibration_source if graph.int8_layers else None)


def _check_runs(xml: Path, ov_model: Any, target: Path) -> None:
    """Run the staged IR once in a child process; an engine crash is an ExportError."""
    from irconvert.export.isolated import run_once_isolated

    shape = ov_model.input(0).get_partial_shape()
    if not shape.rank.is_static or any(d.is_dynamic for d in list(shape)[1:]):
        return  # no concrete input to try
    size = tuple(d.get_length() for d in list(shape)[1:])
    crash = run_once_isolated(xml, size, batch=1)
    if crash is not None:
        raise ExportError(
            f"{target}: OpenVINO crashed ({crash}) running the exported model once in a test "
            "process, so nothing was written; export --format onnx instead, or keep the "
            "binary layers this model shares with the crash in full precision (--exclude)")


def _save(ov: Any, ov_model: Any, xml: Path) -> None:
    # fp16 compression would change the full-precision layers' weights.
    ov.save_model(ov_model, str(xml), compress_to_fp16=False)


def binary_conv_layers(compiled: Any) -> list[str]:
    """Names of the layers a compiled model really runs as BinaryConvolution."""
    names = []
    for node in compiled.get_runtime_model().get_ops():
        info = node.get_rt_info()
        if "layerType" in info and str(info["layerType"].astype(str)) == "BinaryConvolution":
            names.append(node.get_friendly_name())
    return names


def compile_openvino(
    xml: str | os.PathLike[str] | Any, batch: int, threads: int = 0, *,
    precision: str = "f32",
) -> Any:
    """Compile an IR (path or ov.Model) for the CPU at a fixed ``batch``.

    ``threads=0`` lets OpenVINO use every core. ``precision`` is the
    inference precision of the float layers: ``f32`` (exact; the default), or
    ``default`` for the plugin's own choice, which is bf16 on CPUs with AMX or
    AVX512_BF16 (faster, and it changes predictions: docs/export.md).
    """
    ov = import_openvino()
    core = ov.Core()
    model = core.read_model(str(xml)) if isinstance(xml, (str, os.PathLike)) else xml.clone()
    shape = model.input(0).get_partial_shape()
    # a dynamic batch axis, or a static IR (export --batch) run at another batch
    if shape.rank.is_static and (shape[0].is_dynamic or shape[0].get_length() != batch):
        new = [batch] + [d.get_length() for d in list(shape)[1:]]
        model.reshape({model.input(0).get_any_name(): new})
    if precision not in ("f32", "default"):
        raise ValueError(f"precision must be 'f32' or 'default', not {precision!r}")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"} if precision == "f32" else {}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(model, "CPU", config)
