"""docs/recipes.md: generated from the recipe dataclasses, fresh, and complete."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from collections.abc import Iterator
from typing import Any

from irconvert.config import Section, TrainConfig
from tests.conftest import REPO

PAGE = REPO / "docs" / "recipes.md"


def test_recipe_reference_is_fresh() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "recipe_docs.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def _sections(tp: Any) -> Iterator[tuple[type, str]]:
    """Section classes in a type hint, with ``[]`` for those inside a list."""
    if isinstance(tp, type) and issubclass(tp, Section):
        yield tp, ""
        return
    for arg in typing.get_args(tp):
        for cls, suffix in _sections(arg):
            yield cls, "[]" if typing.get_origin(tp) is tuple else suffix


def _dotted_fields(cls: type, prefix: str = "", seen: set[type] | None = None) -> Iterator[str]:
    """Every recipe field by dotted name; a section reached twice is listed once."""
    seen = seen if seen is not None else {cls}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f"{prefix}{f.name}"
        yield name
        for sub, suffix in _sections(hints[f.name]):
            if sub not in seen:
                seen.add(sub)
                yield from _dotted_fields(sub, f"{name}{suffix}.", seen)


def test_every_recipe_field_is_in_the_page() -> None:
    rows = {line.split(" | ")[0].removeprefix("| "): line
            for line in PAGE.read_text(encoding="utf-8").splitlines() if line.startswith("| `")}
    names = list(_dotted_fields(TrainConfig))
    assert {"cpu_memory", "optimizer.lr", "stages[].epochs", "stages[].optimizer"} <= set(names)
    missing = [n for n in names if f"`{n}`" not in rows]
    assert not missing, f"fields not in docs/recipes.md: {missing}"
    assert len(rows) == len(names)  # nothing documented that is not a field
    for name in names:  # type, default and meaning all said, in words, not Python reprs
        row = rows[f"`{name}`"]
        cells = row.strip("| ").split(" | ")
        assert len(cells) == 4 and all(cells), row
        assert not any(s in row for s in ("<class", "typing.", "None", "()")), row
