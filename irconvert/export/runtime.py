"""Run exported models: one predictor interface for ``.irc``, ONNX and OpenVINO IR.

Example:
    >>> predict = load_predictor("model.onnx")
    >>> logits = predict(images)          # float32 NCHW numpy -> logits numpy
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from irconvert.errors import DataError, LoadError, MissingDependencyError

__all__ = ["Predictor", "detect_format", "load_predictor"]

# ONNX Runtime folds BatchNorm/Mul/Add into a Conv's weights; on a binary conv
# that turns an exact integer sum into a rounded one, so an activation that is
# exactly 0 (sign +1) can come out as -1e-7 (sign -1). Keep them apart.
ORT_DISABLED = ["ConvBNFusion", "ConvMulFusion", "ConvAddFusion"]


class Predictor:
    """A callable ``f(images) -> logits`` on numpy float32 arrays, batch first.

    Attributes:
        path: the exported file or directory.
        format: ``packed``, ``onnx`` or ``openvino``.
        input_size: ``(C, H, W)`` the model expects, when the file says so.
        preprocessing: the input preprocessing the file recorded at export
            (``normalization``, ``input_size``, ``eval_resize``, ``eval_crop``;
            see :mod:`irconvert.export.meta`), or None.
        normalization: ``{"mean": [...], "std": [...]}`` the model was trained
            with, when the file records it (None for files without it).
    """

    def __init__(self, path: Path, fmt: str, run: Callable[[np.ndarray], np.ndarray],
                 input_size: tuple[int, ...] | None,
                 preprocessing: dict[str, Any] | None = None, *, fixed: bool = False) -> None:
        self.path, self.format, self._run = path, fmt, run
        self.preprocessing = preprocessing
        recorded = (preprocessing or {}).get("input_size")
        self.input_size = input_size or (tuple(recorded) if recorded else None)
        # ONNX and OpenVINO graphs are traced at one C,H,W; their engines
        # reject any other with a message about tensor indices.
        self.fixed = fixed and self.input_size is not None

    @property
    def normalization(self) -> dict[str, list[float]] | None:
        norm: dict[str, list[float]] | None = (self.preprocessing or {}).get("normalization")
        return norm

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.float32)
        if self.fixed and tuple(x.shape[1:]) != tuple(self.input_size or ()):
            want, got = (",".join(str(d) for d in dims)
                         for dims in (self.input_size or (), x.shape[1:]))
            raise DataError(f"{self.path}: takes inputs of C,H,W = {want} (fixed when it was "
                            f"exported), not {got}; export it again with --input-size {got}")
        return self._run(x)

    def __repr__(self) -> str:
        return f"Predictor({str(self.path)!r}, format={self.format!r})"


def detect_format(path: str | os.PathLike[str]) -> str:
    """``packed``, ``onnx`` or ``openvino`` from the path; LoadError otherwise."""
    p = Path(path)
    suffix = p.suffix.lower()
    if (p.is_dir() and (p / "model.xml").is_file()) or suffix == ".xml":
        return "openvino"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".irc":
        return "packed"
    raise LoadError(f"{p}: not an exported model (.irc, .onnx, or an OpenVINO .xml/directory)")


def load_predictor(path: str | os.PathLike[str], *, threads: int = 0,
                   isolate: bool = False, precision: str = "f32") -> Predictor:
    """Load an exported model as a predictor (numpy float32 NCHW in, logits out).

    Args:
        path: a ``.irc`` file, an ``.onnx`` file, or OpenVINO IR (``.xml`` or
            a directory holding ``model.xml``).
        threads: CPU threads for the engine; 0 lets it use every core.
        isolate: OpenVINO only: before each new batch size runs here, run it
            once in a child process (:mod:`irconvert.export.isolated`), so an
            engine crash on the graph is a ``LoadError`` naming the file and
            the signal instead of the end of this process (the CLI sets it).
        precision: OpenVINO only: ``f32`` (exact) or ``default`` (the plugin's
            choice: bf16 on CPUs that have it); see :func:`compile_openvino`.

    Raises:
        LoadError: missing or unrecognised file; with ``isolate``, raised by
            the predictor's call when the engine crashes running the model.
        MissingDependencyError: the engine (onnxruntime, openvino) is not installed.
    """
    p = Path(path)
    if not p.exists():
        raise LoadError(f"{p}: no such file or directory")
    fmt = detect_format(p)
    if p.is_file() and p.stat().st_size == 0:
        raise LoadError(f"{p}: empty file (0 bytes); export it again, or copy it again if "
                        "it was copied")
    if fmt == "packed":
        return _packed(p, threads)
    if fmt == "onnx":
        return _onnx(p, threads)
    return _openvino(p / "model.xml" if p.is_dir() else p, threads, isolate, precision)


def _packed(path: Path, threads: int) -> Predictor:
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


def _onnx(path: Path, threads: int) -> Predictor:
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError(
            "running ONNX models needs onnxruntime; pip install 'irconvert[onnxruntime]'"
        ) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
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


def _openvino(xml: Path, threads: int, isolate: bool = False,
              precision: str = "f32") -> Predictor:
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
