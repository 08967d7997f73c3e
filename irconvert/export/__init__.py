"""Deployable binary models: freezing, the packed ``.irc`` format, ONNX, OpenVINO.

- :func:`freeze`: latent weights -> sign bits + power-of-two scales.
- :func:`save_packed` / :func:`load_packed` / :func:`describe_packed`: ``.irc``.
- :func:`export_onnx`: standard-op ONNX, optionally with packed weights.
- :func:`export_openvino`: OpenVINO IR running BinaryConvolution kernels.
- :func:`load_predictor`: one ``numpy -> numpy`` callable for all three.
- :func:`export_checkpoint`: checkpoint -> file, what ``irconvert export`` calls.

OpenVINO and ONNX Runtime are imported only when used.
"""

from irconvert.export.api import FORMATS, export_checkpoint
from irconvert.export.bench import BenchRow, bench
from irconvert.export.bits import pack_signs, unpack_signs
from irconvert.export.freeze import FrozenBinaryConv2d, FrozenBinaryLinear, freeze
from irconvert.export.onnx_export import export_onnx
from irconvert.export.openvino_export import export_openvino
from irconvert.export.packed import describe_packed, load_packed, save_packed
from irconvert.export.packed_file import PackedSize
from irconvert.export.runtime import Predictor, load_predictor
from irconvert.export.writers import ExportSummary

__all__ = [
    "FORMATS",
    "BenchRow",
    "ExportSummary",
    "FrozenBinaryConv2d",
    "FrozenBinaryLinear",
    "PackedSize",
    "Predictor",
    "bench",
    "describe_packed",
    "export_checkpoint",
    "export_onnx",
    "export_openvino",
    "freeze",
    "load_packed",
    "load_predictor",
    "pack_signs",
    "save_packed",
    "unpack_signs",
]
