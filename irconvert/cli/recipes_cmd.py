"""``irconvert recipes``: the shipped training recipes, listed or shown by name."""

from __future__ import annotations

import re
from typing import Annotated

import typer
from rich.markup import escape

from irconvert.cli._common import console, user_errors
from irconvert.cli._tables import Column, print_table
from irconvert.cli.app import app


def _summary(text: str) -> str:
    """The first sentence of a recipe's leading comment."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    words = " ".join(lines)
    # the first sentence: a period before a capital letter ("e.g. the" goes on)
    return re.split(r"\.\s+(?=[A-Z])", words)[0].rstrip(".") if words else ""


@app.command()
def recipes(
    name: Annotated[str | None, typer.Argument(
        help="A shipped recipe to print (as --recipe takes it: with or without .yaml).")]
    = None,
) -> None:
    """List the shipped training recipes, or print one.

    Any of them works as --recipe NAME from any directory; copy one to change it.
    """
    from irconvert.config.recipe_file import SHIPPED_RECIPES, find_recipe, shipped_recipes

    if name is not None:
        with user_errors():
            path = find_recipe(name)
        console.print(f"# {path}", highlight=False, markup=False)
        console.print(path.read_text(encoding="utf-8"), highlight=False, markup=False,
                      soft_wrap=True, end="")
        return
    rows = [(escape(stem), escape(_summary((SHIPPED_RECIPES / f"{stem}.yaml").read_text(
        encoding="utf-8")))) for stem in shipped_recipes()]
    print_table(console, f"shipped recipes ({SHIPPED_RECIPES})",
                [Column("name"), Column("what it is", wrap=True)], rows)
