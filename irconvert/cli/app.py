"""The typer application every command module registers itself on."""

from __future__ import annotations

from typing import Annotated

import typer

from irconvert.cli._common import console, set_debug
from irconvert.version import __version__

__all__ = ["app"]

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
