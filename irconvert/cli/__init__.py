"""The ``irconvert`` command line: a thin typer shell over the library.

Each command lives in its own module and registers itself on :data:`app`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from irconvert import __version__
from irconvert.cli._common import console, set_debug

app = typer.Typer(
    name="irconvert",
    help="Turn a trained PyTorch network into an IR-Net binary network, "
    "fine-tune it and export it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"irconvert {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    set_debug(debug)


# Imported for their side effect: each module adds its commands to ``app``.
from irconvert.cli import inspect_cmd, train_cmd, export_cmd  # noqa: E402, F401, I001


def main() -> None:
    """Console-script entry point."""
    app()
