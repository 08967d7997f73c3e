"""One call from a trainer checkpoint to a deployable file: ``export_checkpoint``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irconvert.errors import ExportError
from irconvert.export.formats import FORMATS as TABLE
from irconvert.export.formats import format_of, lookup
from irconvert.export.writers import ExportJob, ExportSummary

if TYPE_CHECKING:
    from torch import nn

__all__ = ["FORMATS", "export_checkpoint"]

FORMATS: tuple[str, ...] = tuple(TABLE)


def _packed_source(src: str | os.PathLike[str], fmt: str) -> bool:
    """Whether ``src`` is an ``.irc`` to export as ONNX/OpenVINO (False: a checkpoint).

    An ``.irc`` holds every tensor of the inference model, so it exports to the
    other formats as its run checkpoint would; anything else that is already
    an export (ONNX, OpenVINO, an ``.irc`` asked for as ``.irc`` again) is refused
    with what to do instead.
    """
    from irconvert.errors import LoadError

    try:
        kind = format_of(src).name
    except LoadError:
        return False  # not an export: the checkpoint loader names what it is
    if kind == "packed" and fmt == "packed":
        raise LoadError(f"{src}: already a packed .irc model; 'irconvert export' turns it "
                        "into onnx or openvino, 'irconvert eval' runs it")
    if kind != "packed":
        raise LoadError(f"{src}: an exported model ({kind}), not a run checkpoint; export "
                        "from the run it came from (its best.pt or last.pt) or from its "
                        ".irc; 'irconvert eval' takes the export itself")
    return True


def _from_packed(src: str | os.PathLike[str],
                 input_size: tuple[int, ...] | None) -> tuple[nn.Module, dict[str, Any] | None]:
    """The frozen model of an ``.irc`` and its preprocessing record.

    The record's input size is the one to trace at unless ``input_size`` is given.
    """
    from irconvert.export.meta import check_metadata
    from irconvert.export.packed import open_packed

    frozen, info = open_packed(src)
    for p in frozen.parameters():
        p.requires_grad_(False)
    metadata = dict(info.preprocessing or {})
    size = input_size or metadata.get("input_size") or getattr(frozen, "irconvert_input_size",
                                                               None)
    if size is not None:
        metadata["input_size"] = [int(v) for v in size]
    return frozen, check_metadata(metadata)


def export_checkpoint(
    src: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str] | None = None, *,
    force: bool = False,
    onnx_packed: bool = False, opset: int | None = None,
    input_size: tuple[int, ...] | None = None, int8: bool | None = None,
    data: str | None = None, calib_images: int = 256, batch: int | None = None,
) -> ExportSummary:
    """Export the model in a trainer run checkpoint (``.pt`` or run directory) or ``.irc``.

    Args:
        src: checkpoint file or run directory (``best.pt``/``last.pt``); for
            ``onnx``/``openvino`` also a packed ``.irc`` (its recorded
            preprocessing carries over).
        fmt: ``packed`` (``.irc``), ``onnx`` or ``openvino``.
        out: output path (an OpenVINO directory or ``.xml`` for openvino); None:
            beside the checkpoint read, named after it (``best.pt`` ->
            ``best.irc``, ``best.onnx``, ``best-openvino/``).
        force: overwrite existing output.
        onnx_packed: ONNX only: store binary weights as bits + unpacking subgraph.
        opset: ONNX opset (default 18).
        input_size: ``(C, H, W)`` for tracing (onnx/openvino).
        int8: OpenVINO only: run the layers kept in full precision (stem,
            downsample, classifier) in int8. None: on when ``data`` is given.
        data: calibration data for int8 (``imagefolder:DIR``, ``cifar10:DIR``,
            ... as for ``irconvert eval``); its training split is used.
        calib_images: how many images of ``data`` calibrate the int8 ranges.
        batch: OpenVINO only: a static batch size (None: a dynamic batch axis).

    Every format records the checkpoint's input preprocessing (normalisation,
    when the checkpoint has it; the input size; the eval resize/crop), so
    ``irconvert eval`` of the file needs no ``--mean``/``--std``.

    Raises:
        ExportError, LoadError, ConversionError, MissingDependencyError: one-line reasons.
    """
    from irconvert.checkpoint import find_checkpoint, load_run_checkpoint, model_from_checkpoint
    from irconvert.export.freeze import binary_layers, freeze
    from irconvert.export.meta import metadata_from_checkpoint
    from irconvert.outputs import check_output, default_export

    record = lookup(fmt)
    options = {"onnx_packed": onnx_packed, "opset": opset, "int8": int8, "data": data,
               "calib_images": calib_images, "batch": batch}
    record.check_options({k: v for k, v in options.items() if k != "calib_images"})
    if int8 and data is None:
        raise ExportError("--int8 needs calibration images: pass --data (e.g. "
                          "imagefolder:DIR) and optionally --calib-images N")
    if batch is not None and batch < 1:
        raise ExportError(f"--batch must be at least 1, not {batch}")
    if calib_images < 1:
        raise ExportError(f"--calib-images must be at least 1, not {calib_images}")
    packed_in = _packed_source(src, fmt)
    # a run folder stands for its best.pt, last.pt or model.pt
    source = Path(src) if packed_in else find_checkpoint(src)
    target = default_export(source, record.suffixes[0]) if out is None else Path(out)
    record.check_output(target)
    check_output(target, force, directory="" in record.suffixes and target.suffix != ".xml")
    if fmt == "openvino":  # fail on a missing engine before the slow part
        from irconvert.export.openvino_export import import_openvino

        import_openvino()
    ckpt: dict[str, Any] | None = None
    if packed_in:
        frozen, metadata = _from_packed(src, input_size)
    else:
        ckpt = load_run_checkpoint(source)
        model = model_from_checkpoint(ckpt)
        frozen = freeze(model)
        size_in = input_size or getattr(model, "irconvert_input_size", None)
        metadata = metadata_from_checkpoint(ckpt, size_in)
    # Trace at the size the metadata records, so the two cannot disagree.
    recorded = (metadata or {}).get("input_size")
    input_size = tuple(recorded) if recorded else input_size
    job = ExportJob(frozen, target, force, metadata, input_size, len(binary_layers(frozen)),
                    ckpt, {k: v for k, v in options.items() if k in record.options})
    summary = record.writer(job)
    summary.source = str(source)  # which file was read: a run folder stands for one
    return summary
