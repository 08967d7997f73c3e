"""``irconvert demo``: the whole pipeline offline, on scikit-learn's digits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from irconvert.cli._training import run_training
from irconvert.cli.app import app
from irconvert.cli.options import Quiet


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Run directory (replaced).")]
    = Path("runs/demo"),
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", help="Where the trained full-precision model is cached "
        "(default ~/.cache/irconvert).")] = None,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", min=1, help="Fine-tuning epochs (default 20).")] = None,
    fp_epochs: Annotated[int, typer.Option(
        "--fp-epochs", min=1, help="Epochs of the full-precision training (cached).")] = 15,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, auto.")] = "cpu",
    quiet: Quiet = False,
) -> None:
    """Run the whole pipeline offline on scikit-learn's 8x8 digits.

    Trains a small full-precision CNN once (cached), binarizes it (1W/1A),
    fine-tunes it with the EDE schedule and prints FP vs binary accuracy.
    """
    from irconvert.demo import run_demo

    run_training(lambda: run_demo(out, cache_dir=cache_dir, epochs=epochs, quiet=quiet,
                                   device=device, fp_epochs=fp_epochs), quiet)
