"""``irconvert export`` and ``irconvert bench``: deployable files and their speed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from irconvert.cli._common import console, human_bytes, user_errors
from irconvert.cli._tables import Column, key_value_grid, print_table
from irconvert.cli.app import app

InputSize = Annotated[str | None, typer.Option(
    "--input-size", help="C,H,W of one input for tracing, e.g. 3,32,32 "
    "(default: the model's own, else 3,224,224).")]


def _input_size(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        dims = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise typer.BadParameter(f"expected C,H,W integers, got {value!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise typer.BadParameter(f"expected three positive integers C,H,W, got {value!r}")
    return dims


@app.command()
def export(
    src: Annotated[Path, typer.Argument(
        help="A run checkpoint (.pt) or run directory (best.pt, last.pt or the model.pt "
        "of a post-training conversion); for onnx and openvino also a packed .irc.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output: a .irc file, an .onnx file, or an OpenVINO "
        "directory (or .xml path). Default: beside the checkpoint, named after it "
        "(best.pt -> best.irc, best.onnx, best-openvino/).", show_default=False)] = None,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="packed (.irc, 1 bit per weight), onnx, or openvino.")
    ] = "packed",
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing output.")] = False,
    onnx_packed: Annotated[bool, typer.Option(
        "--onnx-packed", help="ONNX: store binary weights as bits plus an unpacking "
        "subgraph (about 10x smaller, same outputs).")] = False,
    opset: Annotated[int | None, typer.Option(
        "--opset", min=17, help="ONNX opset (default 18; 17 uses torch's legacy exporter).")
    ] = None,
    input_size: InputSize = None,
    int8: Annotated[bool | None, typer.Option(
        "--int8/--no-int8", help="OpenVINO: run the layers kept in full precision (stem, "
        "downsample, classifier) in int8, calibrated on --data. Default: on when --data "
        "is given.", show_default=False)] = None,
    data: Annotated[str | None, typer.Option(
        "--data", help="OpenVINO int8 calibration images: imagefolder:PATH, cifar10:PATH, "
        "cifar100:PATH, digits or a folder (its training split is used).")] = None,
    calib_images: Annotated[int, typer.Option(
        "--calib-images", min=1, help="How many images of --data calibrate the int8 "
        "activation ranges.")] = 256,
    batch: Annotated[int | None, typer.Option(
        "--batch", min=1, help="OpenVINO: write a static-shape IR for this batch size, which "
        "plain OpenVINO compiles as it is (compile_model(read_model(xml), 'CPU')); without "
        "it the batch axis is dynamic and the model must be reshaped before compiling.")
    ] = None,
) -> None:
    """Write a trained binary model as a deployable file (packed .irc, ONNX or OpenVINO).

    Nothing is left behind on failure; existing output needs --force.
    """
    from irconvert.export.api import export_checkpoint

    size = _input_size(input_size)
    with user_errors():
        summary = export_checkpoint(src, fmt.lower(), out, force=force, onnx_packed=onnx_packed,
                                    opset=opset, input_size=size, int8=int8, data=data,
                                    calib_images=calib_images, batch=batch)
    console.print(key_value_grid([
        ("from", escape(summary.source)),
        ("wrote", escape(f"{summary.path} ({summary.format})")),
        ("size", f"{human_bytes(summary.bytes)} ({summary.bytes:,} bytes)"),
        ("binary layers", str(summary.binary_layers)),
        *((k, escape(v)) for k, v in summary.details.items()),
    ]))
    if summary.layers:
        print_table(console, "how each layer runs", [Column("layer"), Column("runs as"),
                                                      Column("why", wrap=True)],
                    [[escape(name), precision, escape(why)]
                     for name, precision, why in summary.layers])
    for note in summary.notes:
        console.print(f"[yellow]{escape(note)}[/]", highlight=False, soft_wrap=True)


@app.command()
def bench(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Exported models: .irc, .onnx, or OpenVINO .xml / directory. The first is the "
        "speed-up baseline.", show_default=False)] = None,
    src: Annotated[Path | None, typer.Option(
        "--from", help="A run checkpoint or run directory: export it every way and compare "
        "side by side with onnxruntime fp32 of the original model (instead of PATHS).")] = None,
    data: Annotated[str | None, typer.Option(
        "--data", help="With --from: calibration data for the OpenVINO int8 row "
        "(imagefolder:PATH, cifar10:PATH, ...).")] = None,
    calib_images: Annotated[int, typer.Option(
        "--calib-images", min=1, help="With --data: calibration images.")] = 256,
    keep: Annotated[Path | None, typer.Option(
        "--keep", help="With --from: keep the exported files in this new directory.")] = None,
    batch: Annotated[list[int] | None, typer.Option(
        "--batch", "-b", min=1, help="Batch size; repeatable (default 1).")] = None,
    threads: Annotated[list[int] | None, typer.Option(
        "--threads", "-t", min=0, help="CPU threads, 0 = all cores; repeatable (default 0).")
    ] = None,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed runs per setting.")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs first.")] = 2,
    input_size: InputSize = None,
) -> None:
    """Median latency, throughput, size and speed-up of exported models on this CPU.

    Models take turns (round robin), so a change in machine load hits them alike.
    """
    # Long for its signature (typer's options) and its table; the work is compare().
    import tempfile

    from irconvert.export.bench import build_comparison, compare

    size = _input_size(input_size)
    if bool(paths) == (src is not None):
        raise typer.BadParameter("give exported model PATHS or --from CHECKPOINT (one of them)")
    if src is None and (data is not None or keep is not None):
        raise typer.BadParameter("--data and --keep go with --from", param_hint="--data")
    from irconvert.checkpoint import is_run_dir

    for path in paths or []:  # a run is what --from takes, not PATHS
        if path.suffix in (".pt", ".pth") or is_run_dir(path):
            raise typer.BadParameter(f"{path} is a run checkpoint, not an exported model; "
                                     f"bench --from {path} exports it every way and compares "
                                     "them side by side", param_hint="PATHS")
    notes: list[str] = []
    with user_errors(), tempfile.TemporaryDirectory(prefix="irconvert-bench-") as tmp:
        if src is not None:
            work = Path(tmp)
            if keep is not None:
                if keep.exists():
                    from irconvert.errors import ExportError

                    raise ExportError(f"{keep} already exists; --keep needs a new directory")
                keep.mkdir(parents=True)
                work = keep
            files, notes = build_comparison(src, work, data=data, calib_images=calib_images,
                                            input_size=size)
        else:
            assert paths is not None
            files = {_label(p): p for p in paths}
        rows = compare(files, batch or [1], threads or [0], warmup=warmup, runs=runs,
                       input_size=size)
    columns = [Column(c, justify="left" if c in ("model", "engine") else "right")
               for c in ("model", "engine", "size", "input", "batch", "threads", "latency ms",
                         "images/s", "speed-up")]
    engines = {"packed": "PyTorch", "onnx": "onnxruntime", "openvino": "OpenVINO"}
    cells = [[escape(r.label), engines.get(r.format, r.format), human_bytes(r.bytes),
              "x".join(map(str, r.input_size)), str(r.batch),
              "all" if r.threads == 0 else str(r.threads), f"{r.median_ms:.2f}",
              f"{r.throughput:.1f}", f"{r.speedup:.2f}x" if r.speedup else ""] for r in rows]
    print_table(console, f"inference benchmark (median of {runs} timed runs, engines taking "
                f"turns; speed-up vs {escape(rows[0].label)})", columns, cells)
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)


def _label(path: Path) -> str:
    return f"{path.parent.name}/{path.name}" if path.name == "model.xml" else path.name


def render_packed(path: str) -> None:
    """The ``irconvert inspect model.irc`` view: layers, shapes, bytes, size accounting."""
    from irconvert.export.packed import describe_packed

    with user_errors():
        info = describe_packed(path)
    title = (f"{path} ({info.arch}, {info.num_classes} classes, "
             f"format v{info.format_version})")
    columns = [Column("tensor"), Column("dtype"), Column("shape"),
               Column("bytes", justify="right")]
    cells = [[escape(row.name), row.dtype, "x".join(map(str, row.shape)) or "scalar",
              f"{row.nbytes:,}"] for row in info.tensors]
    print_table(console, escape(title), columns, cells)
    s = info.size
    pre = info.preprocessing or {}
    norm = pre.get("normalization")
    rows = [
        ("binary layers", str(len(info.layers))),
        ("weight bits", human_bytes(s.bits)),
        ("scale exponents", human_bytes(s.exponents)),
        ("full-precision tensors", human_bytes(s.floats)),
        ("metadata", human_bytes(s.metadata)),
        ("tensor index + padding", human_bytes(s.index)),
        ("file", f"{human_bytes(s.actual)} ({s.overhead:.2%} above the minimum)"),
        ("normalization", escape(f"mean {norm['mean']} std {norm['std']}") if norm
         else "not recorded"),
    ]
    if pre.get("input_size"):
        rows.append(("input size", "x".join(map(str, pre["input_size"]))))
    rows.append(("sha256", f"{info.sha256} (verified)" if info.sha256
                 else "none (written before irconvert stored digests)"))
    console.print(key_value_grid(rows))
