"""One writer per export format: a frozen model and its metadata in, a file and a summary out.

:func:`irconvert.export.api.export_checkpoint` loads what is to be exported
into an :class:`ExportJob` and calls the writer that the format's record
(:mod:`irconvert.export.formats`) names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["ExportJob", "ExportSummary", "write_onnx", "write_openvino", "write_packed"]


@dataclass
class ExportSummary:
    """What was written, for people (the CLI prints it)."""

    format: str
    path: Path
    bytes: int
    binary_layers: int
    details: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    layers: list[tuple[str, str, str]] = field(default_factory=list)  # name, precision, why
    source: str = ""  # the file exported: a run folder's best.pt, last.pt or model.pt


@dataclass
class ExportJob:
    """Everything a writer needs: the model, where it goes, and the format's options.

    ``ckpt`` is the run checkpoint (None when the source was an ``.irc``);
    ``options`` holds only options the format takes (see its record).
    """

    frozen: nn.Module
    target: Path
    force: bool
    metadata: dict[str, Any] | None
    input_size: tuple[int, ...] | None
    binary_layers: int
    ckpt: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)


def write_packed(job: ExportJob) -> ExportSummary:
    from irconvert.config import BinarizeConfig
    from irconvert.export.packed import save_packed

    assert job.ckpt is not None  # an .irc source is refused for packed output
    size = save_packed(job.frozen, job.target, arch=job.ckpt.get("arch"),
                       num_classes=int(job.ckpt["num_classes"]),
                       config=BinarizeConfig.from_dict(job.ckpt["binarize"]), force=job.force,
                       metadata=job.metadata)
    return ExportSummary(
        "packed", job.target, size.actual, job.binary_layers,
        {"theoretical minimum": f"{size.theoretical:,} bytes",
         "overhead": f"{size.overhead:.2%}"})


def write_onnx(job: ExportJob) -> ExportSummary:
    from irconvert.export.onnx_export import DEFAULT_OPSET, export_onnx

    packed = bool(job.options.get("onnx_packed"))
    res = export_onnx(job.frozen, job.target, packed=packed,
                      opset=job.options.get("opset") or DEFAULT_OPSET,
                      input_size=job.input_size, force=job.force, metadata=job.metadata)
    return ExportSummary("onnx", job.target, res.bytes, job.binary_layers,
                         {"opset": str(res.opset), "exporter": res.exporter,
                          "weights": "packed bits" if packed else "float32"})


def write_openvino(job: ExportJob) -> ExportSummary:
    from irconvert.export.openvino_export import export_openvino

    data, int8, batch = (job.options.get(k) for k in ("data", "int8", "batch"))
    calibration, source = None, ""
    if data is not None and int8 is not False:
        from irconvert.export.calibration import calibration_images

        channels = (job.metadata or {}).get("input_size", [3])[0]
        calib = calibration_images(data, int(job.options.get("calib_images") or 256),
                                   job.metadata, channels=channels)
        calibration, source = calib.images, calib.source
    off = ("int8 off (--no-int8), exact" if int8 is False
           else "no calibration data (pass --data for int8), exact")
    ov = export_openvino(job.frozen, job.target, input_size=job.input_size, force=job.force,
                         metadata=job.metadata, calibration=calibration,
                         calibration_source=source, int8_off_reason=off, batch=batch)
    notes = [f"float fallback: {name}: {why}" for name, why in ov.fallback.items()]
    counts = {p: sum(layer.precision == p for layer in ov.layers)
              for p in ("binary", "int8", "fp32")}
    details = {"BinaryConvolution layers": str(ov.binary_convolutions),
               "float fallbacks": str(len(ov.fallback)),
               "int8 layers": str(counts["int8"]),
               "fp32 layers": str(counts["fp32"])}
    if ov.calibration:
        details["int8 calibration"] = ov.calibration
    details["batch"] = (f"{batch} (static: plain OpenVINO compiles it as it is)" if batch
                        else "dynamic (reshape to a batch size before compiling)")
    return ExportSummary("openvino", ov.xml, ov.bytes, job.binary_layers, details, notes,
                         [(layer.name, layer.precision, layer.why) for layer in ov.layers])
