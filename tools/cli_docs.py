"""Write docs/cli.md from the CLI itself, so the reference cannot drift.

    python tools/cli_docs.py          # rewrite docs/cli.md
    python tools/cli_docs.py --check  # exit 1 if docs/cli.md is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import typer.main
from typer.cli import get_docs_for_click

from irconvert.cli import app

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
INTRO = """
Generated from the command line by `python tools/cli_docs.py`; a test fails
when it is stale. Every command prints one line on an error, and its exit
code says whose it is: **1** for a problem with what was given (a missing or
damaged file, bad data, a bad recipe value), **2** for a usage error (an
option that does not parse, or does not fit the others: click's convention),
**3** for an internal error (a bug in irconvert: `--debug` shows the
traceback, please report it), 130 or 143 for Ctrl-C or SIGTERM.
`irconvert COMMAND --help` prints the same text.

A damaged input is named with what is wrong with it: a truncated or empty
`.irc`, `.pt` or `.onnx`, an OpenVINO folder without its `model.bin`, an
unreadable image (`binarize`/`eval --skip-bad-images` leave those out and
count them instead). Every output is written beside its target and renamed
into place, so a failed write (`OUT: cannot write it (no space left on
device)`) leaves no half-written file and no folder it made; temporary files
of a killed writer are removed by the next write to that path. Training
stopped by Ctrl-C or SIGTERM saves `last.pt` and exits 130 or 143.
"""


def render() -> str:
    command = typer.main.get_command(app)
    ctx = click.Context(command, info_name="irconvert")
    docs = get_docs_for_click(obj=command, ctx=ctx, name="irconvert",
                              title="irconvert CLI reference")
    head, _, rest = docs.partition("\n\n")
    return f"{head}\n{INTRO}\n{rest}".rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        current = DOC.read_text() if DOC.exists() else ""
        if current != text:
            print("docs/cli.md is stale: run python tools/cli_docs.py", file=sys.stderr)
            return 1
        return 0
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
