"""Export a binarized model to OpenVINO IR (xml + bin) with real binary convolutions.

How the graph is built: the frozen model is exported to ONNX and read with
``openvino.convert_model``; then every binary convolution becomes a
``FakeQuantize -> BinaryConvolution -> Multiply`` chain that the CPU plugin
runs as a bit-packed kernel (:mod:`irconvert.export.openvino_graph` says how,
and why each piece is as it is).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from irconvert.atomic import atomic_dir, atomic_file
from irconvert.errors import ExportError, MissingDependencyError
from irconvert.export.freeze import as_frozen, binary_layers
from irconvert.export.meta import OPENVINO_PATH, check_metadata, encode_metadata
from irconvert.export.onnx_export import DEFAULT_OPSET, to_onnx_bytes
from irconvert.export.openvino_graph import (
    fallback_reasons,
    normal_thresholds,
    replace_binary_convs,
)
from irconvert.export.openvino_int8 import (
    LayerPrecision,
    calibrate,
    int8_pools,
    kept_layers,
    pool_names,
    quantize_kept_layers,
    quantize_pool_inputs,
    runtime_precisions,
)
from irconvert.outputs import check_output

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
    ``int8_layers`` counts the int8 ones with weights (an int8 max-pool is
    listed in ``layers`` only); ``calibration`` names the images
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
    frozen = as_frozen(model)
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
    count, crashing = replace_binary_convs(ov, ov_model)
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
        pools = int8_pools(ov_model, kept)
        ranges = calibrate(ov_model, [layer.op for layer in kept] + pools, calibration,
                           compile_fn=lambda m, batch: compile_openvino(m, batch))
        quantize_kept_layers(kept, ranges[:len(kept)])
        quantize_pool_inputs(pools, ranges[len(kept):])
        ov_model.validate_nodes_and_infer_types()
        ran = runtime_precisions(compile_openvino(ov_model, 1))
        for layer in kept:
            row = _int8_row(layer.name, _runtime_row(ran, layer.op.get_friendly_name()),
                            f"{layer.role} {layer.shape}: int8 weights per channel, "
                            "calibrated inputs")
            int8 += row.precision == "int8"
            report.append(row)
        report += [_int8_row(name, _runtime_row(ran, pool.get_friendly_name(), _POOL_NODES),
                             "max-pool after an int8 layer: calibrated int8 input")
                   for pool, name in zip(pools, pool_names(ov_model, frozen, pools),
                                         strict=True)]
    else:
        report += [LayerPrecision(layer.name, "fp32", f"{layer.role} {layer.shape}: "
                                  f"{int8_off_reason}") for layer in kept]
    report += others
    return OpenVinoGraph(ov_model, count, fallback, report, int8)


def _int8_row(name: str, ran: tuple[str, str, str], why: str) -> LayerPrecision:
    """A layer meant to run int8: reported ``int8`` only if the compiled graph really does."""
    _, precision, kernel = ran
    if precision in ("u8", "i8"):
        return LayerPrecision(name, "int8", f"{why}; {kernel}")
    if not precision:
        # Fused away or renamed past recognition: say so rather than "runs it in ".
        return LayerPrecision(name, "fp32", f"{why}, but the compiled graph shows no node "
                                            "for it to confirm int8")
    return LayerPrecision(name, "fp32", f"{why}, but this CPU runs it in {precision}")


# The compiled node kinds that may stand for a kept layer or an int8 max-pool.
_LAYER_NODES = ("Convolution", "FullyConnected", "MatMul")
_POOL_NODES = ("Pooling", "MaxPool")


def _runtime_row(ran: dict[str, tuple[str, str, str]], name: str,
                 kinds: tuple[str, ...] = _LAYER_NODES) -> tuple[str, str, str]:
    """The compiled node that runs ``name``.

    The plugin may rename it ``name/...``; among renamed nodes only one of
    ``kinds`` counts, so a reorder or convert split off beside it is not
    taken for the layer itself.
    """
    if name in ran:
        return ran[name]
    rows = [row for key, row in ran.items() if key.startswith(name + "/") and row[0] in kinds]
    return rows[0] if rows else ("", "", "")


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
