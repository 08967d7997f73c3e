"""Tables that never cut a layer name, at any width and in pipes or files.

rich shrinks a table that is wider than the console by wrapping or, as a
last resort, cutting cells with an ellipsis, which makes ``layer3.2.conv1``
unfindable. Here only the columns marked ``wrap`` (free text) may shrink;
when even that is not enough, the rows are printed as plain lines instead,
each on one line (``soft_wrap``: the terminal wraps it, nothing is cut).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["Column", "key_value_grid", "print_table"]

_MIN_WRAP = 12  # a wrapping column narrower than this is unreadable: use lines
_BORDERS = 3  # per column: two spaces of padding and one rule; plus one rule at the end


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "left"
    wrap: bool = False  # free text that may wrap; the other columns keep their width


def _cell_width(cell: str) -> int:
    return Text.from_markup(cell).cell_len


def _pad(cell: str, width: int, justify: str) -> str:
    space = " " * (width - _cell_width(cell))
    return space + cell if justify == "right" else cell + space


def print_table(console: Console, title: str, columns: Sequence[Column],
                rows: Sequence[Sequence[str]], *, show_header: bool = True) -> None:
    """A rich table when it fits ``console``'s width, else one plain line per row."""
    widths = [max([len(c.header)] + [_cell_width(r[i]) for r in rows])
              for i, c in enumerate(columns)]
    needed = sum(min(w, _MIN_WRAP) if c.wrap else w for c, w in zip(columns, widths, strict=True))
    if needed + _BORDERS * len(columns) + 1 <= console.width:
        table = Table(title=Text(title, overflow="fold"), title_justify="left",
                      show_header=show_header)
        for c, w in zip(columns, widths, strict=True):
            if c.wrap:
                table.add_column(c.header, justify=c.justify, overflow="fold")  # type: ignore[arg-type]
            else:  # no_wrap keeps rich from shrinking it: the fit check above made room
                table.add_column(c.header, justify=c.justify, no_wrap=True,  # type: ignore[arg-type]
                                 min_width=w, overflow="fold")
        for r in rows:
            table.add_row(*r)
        console.print(table)
        return
    console.print(title, highlight=False, soft_wrap=True)
    last = len(columns) - 1
    header = [[c.header for c in columns]] if show_header else []
    for cells in (*header, *rows):
        line = "  ".join(cell if i == last else _pad(cell, w, c.justify)
                         for i, (cell, c, w) in enumerate(zip(cells, columns, widths, strict=True)))
        console.print(line.rstrip(), highlight=False, soft_wrap=True)


def key_value_grid(rows: Sequence[tuple[str, str]]) -> Table:
    """Two borderless columns; keys are never wrapped, values fold rather than being cut."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, value)
    return grid
