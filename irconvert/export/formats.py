"""The export formats as a table: one record per format, for export, eval and bench to look up.

A record says what a format's files are called (how a file is recognised and
what ``--out`` must look like), which ``export`` options it takes, how it is
written (:mod:`irconvert.export.writers`) and what runs it
(:mod:`irconvert.export.engines`). A new format is one more record.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from irconvert.errors import ExportError, LoadError
from irconvert.export import engines, writers
from irconvert.export.predictor import Predictor
from irconvert.export.writers import ExportJob, ExportSummary

__all__ = ["FORMATS", "ExportFormat", "format_of", "is_export", "lookup"]

# The options of ``export_checkpoint`` that belong to one format or another.
FORMAT_OPTIONS = ("onnx_packed", "opset", "int8", "data", "calib_images", "batch")


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    ``suffixes`` are what its files are called (``""``: a folder), the first
    the one to suggest; ``options`` the export options it takes (from
    :data:`FORMAT_OPTIONS`); ``writer`` writes a :class:`ExportJob`;
    ``predictor(path, threads, isolate, precision)`` runs a file.
    """

    name: str
    title: str
    suffixes: tuple[str, ...]
    options: tuple[str, ...]
    writer: Callable[[ExportJob], ExportSummary]
    predictor: Callable[[Path, int, bool, str], Predictor]

    def names(self, path: Path) -> bool:
        """Whether ``path`` is called like one of this format's files (or is its folder)."""
        if path.is_dir():
            return "" in self.suffixes and (path / "model.xml").is_file()
        suffix = path.suffix.lower()
        return bool(suffix) and suffix in self.suffixes

    def check_output(self, target: Path) -> None:
        """Refuse an output name that another format's file would have (an ONNX ``.irc``)."""
        suffix = target.suffix.lower()
        if suffix in self.suffixes or ("" in self.suffixes and target.is_dir()):
            return
        # a folder may have a dot in its name ("r20.v2"): refuse only the
        # names of other files (another format's, a checkpoint's)
        taken = {s for f in FORMATS.values() for s in f.suffixes} | {".pt", ".pth", ".bin"}
        if "" in self.suffixes and suffix not in taken:
            return
        want = " or ".join("a folder" if s == "" else f"NAME{s}" for s in self.suffixes)
        better = target.with_suffix(self.suffixes[0])
        raise ExportError(f"{target}: --format {self.name} writes {want}, not a "
                          f"{suffix or 'plain'} file (eval and bench tell formats by their "
                          f"names); use --out {better}")

    def check_options(self, given: dict[str, object]) -> None:
        """One line for each option set that this format does not take."""
        for option, value in given.items():
            if value not in (None, False) and option not in self.options:
                takes = [f.name for f in FORMATS.values() if option in f.options]
                flag = "--" + option.replace("_", "-")
                raise ExportError(f"{flag} applies to --format {' or '.join(takes)} only")


FORMATS: dict[str, ExportFormat] = {
    "packed": ExportFormat("packed", "packed .irc (1 bit per binary weight)", (".irc",), (),
                           writers.write_packed, engines.packed_predictor),
    "onnx": ExportFormat("onnx", "ONNX (standard ops; onnxruntime runs it)", (".onnx",),
                         ("onnx_packed", "opset"), writers.write_onnx, engines.onnx_predictor),
    "openvino": ExportFormat("openvino", "OpenVINO IR (BinaryConvolution kernels)",
                             ("", ".xml"), ("int8", "data", "calib_images", "batch"),
                             writers.write_openvino, engines.openvino_predictor),
}


def lookup(name: str) -> ExportFormat:
    """The record of format ``name``; ExportError naming the formats otherwise."""
    if name not in FORMATS:
        raise ExportError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[name]


def format_of(path: str | os.PathLike[str]) -> ExportFormat:
    """The format of an exported file, from its name; LoadError for anything else."""
    p = Path(path)
    for fmt in FORMATS.values():
        if fmt.names(p):
            return fmt
    raise LoadError(f"{p}: not an exported model (.irc, .onnx, or an OpenVINO .xml/directory)")


def is_export(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like an exported model (its suffix, or an OpenVINO folder)."""
    try:
        format_of(path)
    except LoadError:
        return False
    return True
