"""The ``irconvert`` command line: a thin typer shell over the library.

Each command lives in its own module and registers itself on :data:`app`.
"""

from __future__ import annotations

import typer

from irconvert.cli.app import app

# Imported for their side effect: each module adds its commands to ``app``, in
# the order ``irconvert --help`` lists them.
# isort: off
from irconvert.cli import inspect_cmd, binarize_cmd, eval_cmd, demo_cmd, export_cmd  # noqa: F401
from irconvert.cli import recipes_cmd  # noqa: F401
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point.

    Usage errors (a missing option, a bad value, an unknown command) are
    printed like library errors: one line, instead of click's usage box.
    """
    import sys

    from irconvert.cli._common import err_console

    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err_console.print("[bold yellow]aborted[/]")
        sys.exit(130)
    except typer.TyperException as exc:  # typer's (vendored) click errors
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        err_console.print(f"[bold red]error:[/] {where}{message} (see --help)",
                          highlight=False, soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
