"""``irconvert binarize`` without fine-tuning: no ``--data``, or ``--epochs 0``.

A thin shell over :func:`irconvert.train.posttrain.post_train`: it prints the
conversion table, the accuracy when there was data, where the checkpoint went
and the exact command that fine-tunes it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from rich.markup import escape

from irconvert.cli._common import console, user_errors
from irconvert.cli._tables import key_value_grid
from irconvert.outputs import POSTTRAIN
from irconvert.train.posttrain import PostTrainResult, post_train

__all__ = ["run_post_training"]

DATA_FORMS = "imagefolder:PATH, cifar10:PATH, cifar100:PATH or digits"


def _line(text: str) -> None:
    # Commands and paths must stay whole and copyable: never wrapped by rich.
    console.print(text, highlight=False, soft_wrap=True, markup=False)


def _run_dir(path: Path) -> Path:
    """Where the fine-tuning run should go: beside the checkpoint."""
    return path.parent if path.name == POSTTRAIN else path.with_suffix("")


def _command(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in ("irconvert", *args))


def run_post_training(model: str, config: Any, out: Path | None, data: str | None, *,
                      flags: list[str], force: bool, download: bool,
                      **load: Any) -> PostTrainResult:
    """Convert (and with data, calibrate and evaluate), then tell the user what is next.

    ``flags`` are the command-line options to repeat in the fine-tuning
    command (how to load the model, the recipe and its overrides).
    """
    from irconvert.cli.inspect_cmd import render_report

    with user_errors():
        result = post_train(model, out, recipe=config, data=data, force=force,
                            download=download, **load)
    render_report(result.report, f"{model} ({result.arch})")
    mode = f"1W/{result.report.act_bits}A"
    rows: list[tuple[str, str]] = []
    if result.thresholds:
        rows.append(("activation thresholds", f"set from data in {result.thresholds} layers"))
    if result.binary is not None:
        if result.bn_batches:
            rows.append(("BatchNorm statistics",
                         f"re-estimated on {result.bn_batches} training batches"))
        where = f"{result.data} ({result.split}, {result.binary.images} images)"
        rows.append(("evaluated on", escape(where)))
        if result.skipped:
            rows.append(("unreadable images skipped", f"{len(result.skipped)} (listed below)"))
        if result.fp is not None:
            rows.append(("full-precision top-1 / top-5",
                         f"{result.fp.top1:.2f}% / {result.fp.top5:.2f}%"))
        rows.append((f"binary top-1 / top-5 ({mode}, post-training)",
                     f"{result.binary.top1:.2f}% / {result.binary.top5:.2f}%"))
    if rows:
        console.print(key_value_grid(rows))
    for path in result.skipped:
        _line(f"skipped unreadable image: {path}")
    _line(f"wrote {result.path} ({result.arch}, {mode}, not fine-tuned)")
    run_dir = str(_run_dir(result.path))
    if data is None:
        _line("accuracy: not measured; a binarized model is near chance until it is "
              f"fine-tuned on data. Next, with DATA = {DATA_FORMS}:")
        data_arg = "DATA"
    else:
        _line("fine-tuning recovers more of the full-precision accuracy; next:")
        data_arg = data
    _line("  " + _command("binarize", model, *flags, "--data", data_arg, "--out", run_dir))
    _line("export it as it is: " + _command("export", str(result.path), "--format", "packed",
                                            "--out", f"{_run_dir(result.path).name}.irc"))
    return result
