"""The engines behind a :class:`~irconvert.export.predictor.Predictor`: torch, ORT, OpenVINO.

One loader per format; :mod:`irconvert.export.formats` names which one runs
which file, and :func:`irconvert.export.runtime.load_predictor` calls it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from irconvert.errors import LoadError, MissingDependencyError
from irconvert.export.predictor import Predictor

__all__ = ["ORT_DISABLED", "onnx_predictor", "openvino_predictor", "packed_predictor"]

# ONNX Runtime folds BatchNorm/Mul/Add into a Conv's weights; on a binary conv
# that turns an exact integer sum into a rounded one, so an activation that is
# exactly 0 (sign +1) can come out as -1e-7 (sign -1). Keep them apart.
ORT_DISABLED = ["ConvBNFusion", "ConvMulFusion", "ConvAddFusion"]


def packed_predictor(path: Path, threads: int, isolate: bool = False,
                     precision: str = "f32") -> Predictor:
    """An ``.irc`` in PyTorch (``isolate`` and ``precision`` are OpenVINO's)."""
    import torch

    from irconvert.export.packed import open_packed

    model, info = open_packed(path)
    preprocessing = info.preprocessing

    def run(x: np.ndarray) -> np.ndarray:
        before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                out: np.ndarray = model(torch.from_numpy(x)).numpy()
        finally:
            torch.set_num_threads(before)
        return out

    size = getattr(model, "irconvert_input_size", None)
    return Predictor(path, "packed", run, tuple(size) if size else None, preprocessing)


def _engine_reason(exc: BaseException) -> str:
    """The line of an engine's exception that says what is wrong.

    OpenVINO puts a source location first ("Exception from src/...cpp:84:",
    "Check '...' failed at ..."); onnxruntime prefixes a status code and
    "Load model from PATH failed:". Neither helps the user.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines
              if not line.startswith(("Exception from ", "Check '"))]
    text = (useful or lines or [type(exc).__name__])[0]
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^Load model from .* failed:\s*", "", text)
    return text.rstrip(".")[:200]


def _static_size(dims: list[Any]) -> tuple[int, ...] | None:
    rest = dims[1:]
    return tuple(int(d) for d in rest) if all(isinstance(d, int) for d in rest) else None


def ort_options(threads: int, *, spin: bool = True) -> Any:
    """onnxruntime session options: ``threads`` intra-op threads, one inter-op.

    ``spin=False`` stops idle workers from spin-waiting for the next op. Alone,
    spinning is onnxruntime's latency default; engines timed side by side in
    one process run without it: in ``benchmarks/inference.py`` on 2 threads
    of an AVX2 EPYC, the binary ResNet-18 IR timed right after onnxruntime's
    turn took 10.7-11.6 ms at batch 1 beside spinning sessions and 6.1 ms
    beside quiet ones (the same IR in a later slot: 6.0-7.0 ms either way).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def onnx_predictor(path: Path, threads: int, isolate: bool = False,
                   precision: str = "f32", *, spin: bool = True) -> Predictor:
    """An ONNX file in onnxruntime (``isolate`` and ``precision`` are OpenVINO's;
    ``spin``: see :func:`ort_options`)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError(
            "running ONNX models needs onnxruntime; pip install 'irconvert[onnxruntime]'"
        ) from None
    options = ort_options(threads, spin=spin)
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=ORT_DISABLED)
    except Exception as exc:
        raise LoadError(f"{path}: onnxruntime cannot load it ({_engine_reason(exc)}); it may "
                        "be truncated or damaged: export it again") from None
    name = session.get_inputs()[0].name
    from irconvert.export.meta import ONNX_KEY, decode_metadata

    props = session.get_modelmeta().custom_metadata_map
    preprocessing = decode_metadata(props.get(ONNX_KEY), path)

    def run(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(None, {name: x})[0]
        return out

    size = _static_size(list(session.get_inputs()[0].shape))
    return Predictor(path, "onnx", run, size, preprocessing, fixed=size is not None)


def openvino_predictor(path: Path, threads: int, isolate: bool = False,
                       precision: str = "f32") -> Predictor:
    """OpenVINO IR (an ``.xml`` or its folder) on the CPU plugin."""
    xml = path / "model.xml" if path.is_dir() else path
    from irconvert.export.isolated import run_once_isolated
    from irconvert.export.openvino_export import compile_openvino, import_openvino

    weights = xml.with_suffix(".bin")
    if xml.is_file() and not weights.is_file():
        raise LoadError(f"{weights}: missing; OpenVINO IR is {xml.name} and {weights.name} "
                        "side by side: copy both, or export it again")
    ov = import_openvino()
    try:
        model = ov.Core().read_model(str(xml))
    except Exception as exc:
        raise LoadError(f"{xml}: OpenVINO cannot read it ({_engine_reason(exc)}); "
                        f"{xml.name} or {weights.name} may be truncated or damaged: "
                        "export it again") from None
    compiled: dict[int, Any] = {}

    def run(x: np.ndarray) -> np.ndarray:
        batch = int(x.shape[0])
        if batch not in compiled:  # BinaryConvolution needs a static batch
            crash = run_once_isolated(xml, tuple(x.shape[1:]), batch) if isolate else None
            if crash is not None:
                raise LoadError(
                    f"{xml}: OpenVINO crashed ({crash}) running it in a test process, at "
                    f"batch {batch}; nothing was changed. Export it again with this irconvert "
                    "(it avoids the known crashing patterns), or use the ONNX export")
            compiled[batch] = compile_openvino(model, batch, threads, precision=precision)
        out: np.ndarray = compiled[batch](x)[0]
        return np.asarray(out)

    from irconvert.export.meta import OPENVINO_PATH, decode_metadata

    where = list(OPENVINO_PATH)
    text = str(model.get_rt_info(where).astype(str)) if model.has_rt_info(where) else None
    shape = model.input(0).get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape]
    size = _static_size(dims)
    return Predictor(xml, "openvino", run, size, decode_metadata(text, xml),
                     fixed=size is not None)
