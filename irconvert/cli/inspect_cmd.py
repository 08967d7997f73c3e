"""``irconvert inspect``: what binarization would do to a model, layer by layer."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from irconvert.cli._common import console, human_bytes, print_json, user_errors
from irconvert.cli._tables import Column, key_value_grid, print_table
from irconvert.cli.app import app
from irconvert.cli.options import (
    ActBits,
    Arch,
    BlockTransform,
    Exclude,
    Include,
    KeepClassifier,
    KeepDepthwise,
    KeepDownsample,
    KeepGrouped,
    KeepSE,
    KeepStem,
    NumClasses,
    Pretrained,
    TrustPickle,
    binarize_config,
)
from irconvert.convert import ConversionReport, plan

REPORT_COLUMNS = (Column("layer"), Column("type"), Column("shape"),
                  Column("params", justify="right"), Column("decision"),
                  Column("reason", wrap=True))


def render_report(report: ConversionReport, title: str) -> None:
    """The layer table and the totals (``inspect``, ``binarize --dry-run``, post-training)."""
    rows = []
    for row in report.rows:
        decision = "[green]binarize[/]" if row.binarize else "[yellow]keep fp32[/]"
        reason = escape(row.reason) + (" [red](inputs >= 0!)[/]" if row.warning else "") + (
            " [cyan](+ activation threshold: one-signed inputs)[/]" if row.fix else "")
        rows.append([escape(row.name), row.type, "x".join(map(str, row.shape)),
                     f"{row.params:,}", decision, reason])
    print_table(console, escape(title), REPORT_COLUMNS, rows)
    if report.blocks:
        # One line, like a log line: a pipe or file gets it unwrapped.
        console.print(f"Block transforms (Hardtanh + shortcut per binarized conv): "
                      f"{len(report.blocks)} blocks: {', '.join(report.blocks)}",
                      highlight=False, soft_wrap=True)
    share = 100 * report.binarized_params / max(report.total_params, 1)
    console.print(key_value_grid([
        ("mode", f"1W/{report.act_bits}A"),
        ("binarized layers", f"{report.binarized_layers} of {len(report.rows)}"),
        ("parameters binarized",
         f"{report.binarized_params:,} of {report.total_params:,} ({share:.1f}%)"),
        ("fp32 size", human_bytes(report.fp32_bytes)),
        ("size after packing", human_bytes(report.packed_bytes)),
        ("compression", f"{report.compression:.2f}x"),
    ]))
    for line in report.fixes:
        console.print(f"[bold cyan]fixed:[/] {escape(line)}", highlight=False, soft_wrap=True)
    for line in report.warnings:
        console.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False,
                      soft_wrap=True)


def _refuse_other_exports(source: str) -> None:
    """ONNX and OpenVINO files are no PyTorch model: say what to run on them instead."""
    from irconvert.errors import LoadError
    from irconvert.export.runtime import detect_format

    try:
        fmt = detect_format(source)
    except LoadError:
        return
    if fmt != "packed":
        raise LoadError(f"{source}: an {'ONNX' if fmt == 'onnx' else 'OpenVINO'} export; "
                        "inspect reads .irc files and models to binarize (run it with "
                        f"'irconvert eval' or 'irconvert bench')")


@app.command()
def inspect(
    source: Annotated[str, typer.Argument(
        help="A checkpoint (.pth/.pt/.th/.safetensors), a torchvision name (resnet18), "
        "a timm name (timm:resnet18) or a built-in name (cifar_resnet20).")],
    arch: Arch = None,
    num_classes: NumClasses = None,
    pretrained: Pretrained = False,
    trust_pickle: TrustPickle = False,
    act_bits: ActBits = 1,
    include: Include = None,
    exclude: Exclude = None,
    keep_stem: KeepStem = True,
    keep_classifier: KeepClassifier = True,
    keep_downsample: KeepDownsample = True,
    keep_depthwise: KeepDepthwise = True,
    keep_grouped: KeepGrouped = True,
    keep_se: KeepSE = True,
    block_transform: BlockTransform = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Show which conv/linear layers would be binarized, why, and the size saved.

    A dry run: nothing is written.
    """
    from irconvert.io import load_model

    if source.lower().endswith(".irc"):  # an exported packed model: its layers and sizes
        from irconvert.cli.export_cmd import render_packed

        render_packed(source)
        return
    with user_errors():
        _refuse_other_exports(source)
        config = binarize_config(act_bits, include, exclude, keep_stem, keep_classifier,
                                 keep_downsample, keep_depthwise, keep_grouped, block_transform,
                                 keep_se)
        loaded = load_model(source, arch=arch, num_classes=num_classes, pretrained=pretrained,
                            trust_pickle=trust_pickle)
        report = plan(loaded.model, config)
    if as_json:
        print_json({"source": source, "arch": loaded.arch, **report.to_dict()})
    else:
        render_report(report, f"{source} ({loaded.arch})")
