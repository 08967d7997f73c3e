"""What every CLI command shares: the console, error rendering, the debug flag."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from irconvert.errors import IRConvertError

console = Console()
err_console = Console(stderr=True)

_state = {"debug": False}


def set_debug(value: bool) -> None:
    _state["debug"] = value


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors into one red line and exit code 1 (3 for bugs; 2 is usage).

    ``--debug`` lets the traceback through instead.
    """
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except IRConvertError as exc:
        if _state["debug"]:
            raise
        # escaped: "pip install 'irconvert[onnx]'" is not console markup
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        raise typer.Exit(1) from None
    except Exception as exc:
        if _state["debug"]:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(first)} "
            "(run with --debug for the traceback)", highlight=False, soft_wrap=True,
        )
        raise typer.Exit(3) from None  # 2 is click's usage error


def print_json(data: Any) -> None:
    """JSON on stdout, nothing else, so it pipes into jq."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"
