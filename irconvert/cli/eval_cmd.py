"""``irconvert eval``: accuracy and loss of any model a user has, on a data set."""

from __future__ import annotations

from typing import Annotated

import typer

from irconvert.cli._common import console, err_console, print_json, user_errors
from irconvert.cli.app import app
from irconvert.cli.options import Arch, DataOpt, NumClasses, SkipBad, TrustPickle


def _float_list(value: str | None, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"{name} must be comma-separated numbers, got {value!r}",
                                 param_hint=name) from None


@app.command("eval")
def eval_cmd(
    path: Annotated[str, typer.Argument(
        help="A run directory or run checkpoint (.pt), an export (.irc, .onnx, OpenVINO "
        ".xml or folder), or an original model (anything 'binarize' takes).")],
    data: DataOpt,
    split: Annotated[str, typer.Option(
        "--split", help="Evaluation split: auto (val/, else test/), val or test.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")]
    = 256,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")] = "cpu",
    workers: Annotated[int, typer.Option("--workers", min=0, help="DataLoader processes.")]
    = 0,
    arch: Arch = None,
    num_classes: NumClasses = None,
    trust_pickle: TrustPickle = False,
    mean: Annotated[str | None, typer.Option(
        "--mean", help="Normalisation mean, e.g. 0.485,0.456,0.406 (default: recorded in "
        "the run, else the model's own).")] = None,
    std: Annotated[str | None, typer.Option("--std", help="Normalisation std.")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, help="Evaluate an evenly spaced subset of this many images.")] = None,
    skip_bad_images: SkipBad = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Measure top-1/top-5 accuracy and loss of a model on a data set."""
    from irconvert.evaluate import evaluate_any

    m, s = _float_list(mean, "--mean"), _float_list(std, "--std")
    if (m is None) != (s is None):
        raise typer.BadParameter("give both --mean and --std, or neither", param_hint="--mean")
    with user_errors():
        result = evaluate_any(path, data, split=split, batch_size=batch_size, device=device,
                              workers=workers, arch=arch, num_classes=num_classes,
                              trust_pickle=trust_pickle, mean=m, std=s, limit=limit,
                              bad_files="skip" if skip_bad_images else "stop")
    for note in result.get("notes", []):
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(result)
        return
    console.print(f"{path} on {result['data']} ({result['split']}, {result['images']} images): "
                  f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
                  f"loss {result['loss']:.4f}", highlight=False, soft_wrap=True)
