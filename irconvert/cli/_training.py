"""What the training commands share: run a training call, print its summary."""

from __future__ import annotations

import os
from typing import Any

import typer
from rich.markup import escape

from irconvert.cli._common import console, err_console, human_bytes, user_errors
from irconvert.cli._tables import Column, print_table

__all__ = ["render_summary", "run_training"]


def _epochs_by_stage(history: list[dict[str, Any]], epochs: int) -> str:
    """``30`` for a plain recipe; ``10 activations + 20 both`` for a staged one."""
    counts: dict[str, int] = {}
    for row in history:
        key = f"{row.get('stage', '1')} ({row.get('binarize', 'both')})"
        counts[key] = counts.get(key, 0) + 1
    if len(counts) <= 1:
        return str(epochs)
    return f"{epochs}: " + " + ".join(f"{n} {key}" for key, n in counts.items())


def render_summary(result: Any, quiet: bool) -> None:
    """FP vs binary accuracy, sizes and wall time."""
    report = result.report
    final = result.final or {}
    nan = float("nan")
    fp = f"{result.fp_top1:.2f}%" if result.fp_top1 is not None else "n/a"
    amp = getattr(result, "amp", "none")
    # a bf16 evaluation is not the deployable figure: say so beside it
    how = f", {amp} evaluation" if amp not in ("none", None) else ""
    rows = [
        ("full-precision top-1 (original)", fp),
        (f"binary top-1 (1W/{report['act_bits']}A, best{how})", f"{result.best_top1:.2f}%"),
        (f"binary top-1 / top-5 (last epoch{how})",
         f"{final.get('val_top1', nan):.2f}% / {final.get('val_top5', nan):.2f}%"),
        *([("fp32 (exports, eval)", f"irconvert eval {result.run_dir}/best.pt --data ... "
            "gives the figure the exports reproduce")] if how else []),
        ("binarized layers", f"{report['binarized_layers']} of {len(report['rows'])}"),
        ("fp32 size", human_bytes(report["fp32_bytes"])),
        ("size after packing", f"{human_bytes(report['packed_bytes'])} "
                               f"({report['compression']:.1f}x smaller)"),
        ("epochs", _epochs_by_stage(result.history, result.epochs) + (
            f" (of {result.epochs_ceiling}: what fit the time budget)"
            if getattr(result, "epochs_ceiling", None) else "")),
        *([("unreadable images skipped", f"{len(result.skipped)} (named in the log)")]
          if getattr(result, "skipped", None) else []),
        ("wall time", f"{result.wall_time:.1f} s"),
        ("run directory", str(result.run_dir)),
    ]
    if quiet:
        for key, value in rows:
            console.print(f"{key}: {value}", highlight=False, soft_wrap=True)
        return
    print_table(console, "irconvert summary",
                [Column("what"), Column("value", justify="right", wrap=True)],
                [(key, escape(value)) for key, value in rows], show_header=False)


def run_training(call: Any, quiet: bool) -> None:
    from irconvert.train.outcome import TrainingInterrupted

    with user_errors():
        try:
            result = call()
        except TrainingInterrupted as exc:
            err_console.print(f"[bold yellow]interrupted:[/] {exc}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None  # 130 Ctrl-C, 143 SIGTERM
    if result.run_dir is not None and _is_main():
        render_summary(result, quiet)


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"
