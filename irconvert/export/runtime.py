"""Run exported models: one predictor interface for ``.irc``, ONNX and OpenVINO IR.

Example:
    >>> predict = load_predictor("model.onnx")
    >>> logits = predict(images)          # float32 NCHW numpy -> logits numpy
"""

from __future__ import annotations

import os
from pathlib import Path

from irconvert.errors import LoadError
from irconvert.export.formats import ExportFormat, format_of
from irconvert.export.predictor import Predictor

__all__ = ["Predictor", "checked_format", "detect_format", "load_predictor"]

def detect_format(path: str | os.PathLike[str]) -> str:
    """``packed``, ``onnx`` or ``openvino`` from the path; LoadError otherwise."""
    return format_of(path).name


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
    return checked_format(p).predictor(p, threads, isolate, precision)


def checked_format(path: Path) -> ExportFormat:
    """The format of an exported model that exists and is not empty; LoadError otherwise."""
    if not path.exists():
        raise LoadError(f"{path}: no such file or directory")
    fmt = format_of(path)
    if path.is_file() and path.stat().st_size == 0:
        raise LoadError(f"{path}: empty file (0 bytes); export it again, or copy it again if "
                        "it was copied")
    return fmt
