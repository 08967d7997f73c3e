"""Export a binarized model to ONNX (standard ops only, dynamic batch axis).

The exported graph is the frozen model (:func:`irconvert.export.freeze`):

- binary activations: ``Where(x >= 0, 1, -1)`` (GreaterOrEqual + Where), so
  ``sign(0) = +1`` exactly as in training; a layer with a learnt threshold
  ``b`` first subtracts it per input channel (``Sub``), the same float
  subtraction as training, so ``x - b >= 0 -> +1`` holds bit for bit;
- binary weights, default mode: one float32 initializer per layer holding
  ``sign * 2**exponent`` (exactly the values training used);
- binary weights, ``packed=True``: a uint8 initializer with the bits (layout
  of :mod:`irconvert.export.bits`) and a float32 scale per output channel;
  a small subgraph (Cast, Div, Floor, Mul, Sub, Reshape, Slice) rebuilds the
  +-1 weight at load time (ONNX Runtime constant-folds it once per session).
  Both modes give identical outputs; packed files are ~10x smaller.
- BatchNorm stays a BatchNormalization node (ONNX Runtime folds it into the
  preceding Conv when it builds the session).
- RPReLU (``prelu(x - gamma) + zeta``, per channel) is ``Sub``, ``PRelu``
  and ``Add`` with per-channel constants.

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), the
supported path in torch >= 2.9, producing opset 18+. Opset 17 is produced by
the legacy TorchScript exporter (``dynamo=False``, deprecated by torch),
because onnx's version converter cannot lower the dynamo graph's ReduceMean.

The input preprocessing (normalisation, input size, eval resize/crop), when
given, is recorded as JSON in the model's ``metadata_props`` under
``irconvert.preprocessing`` (see :mod:`irconvert.export.meta`).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from irconvert.atomic import atomic_file
from irconvert.errors import ExportError, MissingDependencyError
from irconvert.export.freeze import FrozenBinaryLayer, as_frozen, binary_layers
from irconvert.export.meta import ONNX_KEY, check_metadata, encode_metadata
from irconvert.export.sign_names import binary_call_order, name_signs
from irconvert.outputs import check_output

__all__ = ["DEFAULT_OPSET", "OnnxExport", "example_input", "export_onnx", "to_onnx_bytes"]

DEFAULT_OPSET = 18
MIN_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"
DEFAULT_INPUT_SIZE = (3, 224, 224)


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote."""

    path: Path
    opset: int
    packed: bool
    exporter: str
    bytes: int
    binary_layers: int


def example_input(model: nn.Module, input_size: tuple[int, ...] | None = None,
                  batch: int = 2) -> torch.Tensor:
    """A random input for tracing: ``input_size`` or the model's ``irconvert_input_size``."""
    size = input_size or getattr(model, "irconvert_input_size", None) or DEFAULT_INPUT_SIZE
    return torch.randn(batch, *size)


def _prepare(model: nn.Module, packed: bool) -> nn.Module:
    frozen = as_frozen(model)
    layer: FrozenBinaryLayer
    for layer in binary_layers(frozen).values():
        layer.use_packed_(packed)
    return frozen.eval()


def _reason(exc: BaseException) -> str:
    """One line from an exporter error chain: the failing op and the root cause."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 20:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    text = " ".join(str(e) for e in chain)
    op = re.search(r"target=torch\.ops\.([\w.]+)", text)
    root = chain[-1]
    first = re.sub(r"\x1b\[[0-9;]*m", "", (str(root).strip().splitlines() or [""])[0])[:160]
    where = f"{op.group(1)}: " if op else ""
    return f"{where}{type(root).__name__}: {first}"


def to_onnx_bytes(
    model: nn.Module, *, packed: bool = False, opset: int = DEFAULT_OPSET,
    input_size: tuple[int, ...] | None = None, metadata: dict[str, Any] | None = None,
) -> tuple[bytes, str]:
    """Trace the frozen ``model`` to a serialized ONNX model; returns (bytes, exporter).

    ``metadata`` (input preprocessing, :mod:`irconvert.export.meta`) is stored
    in the model's ``metadata_props``.

    Raises:
        ExportError: no binarized layer, an opset below 17, bad metadata, or a
            model the exporter cannot express in ONNX.
        MissingDependencyError: onnxscript (needed by the exporter) is missing.
    """
    import onnx

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; use --opset {MIN_OPSET} or newer")
    preprocessing = check_metadata(metadata)
    frozen = _prepare(model, packed)
    x = example_input(frozen, input_size)
    dynamo = opset >= DEFAULT_OPSET
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
                contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            if dynamo:
                program = torch.onnx.export(
                    frozen, (x,), None, dynamo=True, opset_version=opset, verbose=False,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    # The optimizer folds BatchNorm into small conv weights (binary
                    # sums stop being exact) and small packed layers back to fp32.
                    optimize=False,
                )
                if program is None:  # pragma: no cover - torch returns a program here
                    raise ExportError("torch.onnx.export returned no program")
                proto = program.model_proto
            else:
                buf = io.BytesIO()
                torch.onnx.export(
                    frozen, (x,), buf,  # type: ignore[arg-type]
                    dynamo=False, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    do_constant_folding=not packed,
                )
                proto = onnx.load_from_string(buf.getvalue())
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(
            f"ONNX export needs {exc.name}, which irconvert depends on; reinstall it: "
            f"pip install {exc.name}") from None
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"the model cannot be expressed in ONNX: {_reason(exc)}") from None
    got = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if got != opset:
        raise ExportError(f"the exporter produced opset {got}, not the requested {opset}; "
                          f"use --opset {got}")
    name_signs(proto, binary_call_order(frozen, x))
    for node in proto.graph.node:  # per-node stack traces: most of a small model's bytes
        del node.metadata_props[:]
        node.doc_string = ""
    for prop in list(proto.metadata_props):
        if prop.key == ONNX_KEY:
            proto.metadata_props.remove(prop)
    if preprocessing:
        entry = proto.metadata_props.add()
        entry.key, entry.value = ONNX_KEY, encode_metadata(preprocessing)
    onnx.checker.check_model(proto)
    return proto.SerializeToString(), "dynamo" if dynamo else "torchscript"


def export_onnx(
    model: nn.Module, path: str | os.PathLike[str], *, packed: bool = False,
    opset: int = DEFAULT_OPSET, input_size: tuple[int, ...] | None = None, force: bool = False,
    metadata: dict[str, Any] | None = None,
) -> OnnxExport:
    """Export a binarized model to an ONNX file that passes ``onnx.checker``.

    Args:
        model: a model converted by :func:`irconvert.binarize_` (or already frozen).
        path: output ``.onnx`` file (written aside, then renamed into place).
        packed: store binary weights as uint8 bits plus an unpacking subgraph.
        opset: ONNX opset, >= 17 (18 and up use the dynamo exporter).
        input_size: ``(C, H, W)`` of one input; the model's
            ``irconvert_input_size`` or ``(3, 224, 224)`` when None.
        force: overwrite an existing file.
        metadata: the input preprocessing to record (``normalization``,
            ``input_size``, ``eval_resize``, ``eval_crop``; see
            :mod:`irconvert.export.meta`) in ``metadata_props``; None records none.

    Raises:
        ExportError: see :func:`to_onnx_bytes`; or the output exists without ``force``.
    """
    out = check_output(path, force)
    data, exporter = to_onnx_bytes(model, packed=packed, opset=opset, input_size=input_size,
                                   metadata=metadata)
    with atomic_file(out) as tmp:
        tmp.write_bytes(data)
    return OnnxExport(path=out, opset=opset, packed=packed, exporter=exporter, bytes=len(data),
                      binary_layers=len(binary_layers(_prepare(model, False))))
