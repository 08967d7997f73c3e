"""Write docs/recipes.md from the recipe dataclasses, so the field reference cannot drift.

    python tools/recipe_docs.py          # rewrite docs/recipes.md
    python tools/recipe_docs.py --check  # exit 1 if docs/recipes.md is stale

Types, constraints and defaults come from the fields themselves (type hints
and metadata), meanings from the ``Args:`` section of each dataclass's
docstring; a field without one stops the generator instead of leaving a blank.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from irconvert.config import Section, TrainConfig
from irconvert.config.base import _CHECK, _CHECKS, _SINGLE
from irconvert.config.recipe_file import recipe_from_dict, yaml_loader
from irconvert.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "recipes.md"
RECIPES = REPO / "irconvert" / "recipes"
# _CHECK, _CHECKS, _SINGLE are the validator's own metadata keys and constraint
# words: the page says "positive number" in the words a bad value's error uses
NOUNS = {bool: "true/false", int: "integer", float: "number", str: "string"}
ENTRY = re.compile(r"(\w+(?:, \w+)*): (.*)")  # "name: text" or "a, b: text"


def sections() -> dict[type, str]:
    """Every section class reachable from TrainConfig -> its dotted name, in reading order."""
    found: dict[type, str] = {TrainConfig: ""}
    queue: list[type] = [TrainConfig]
    for cls in queue:  # grows while walked: breadth first, so top-level names win
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            for sub, suffix in nested(hints[f.name]):
                if sub not in found:
                    found[sub] = dotted(found[cls], f.name) + suffix
                    queue.append(sub)
    return found


def nested(tp: Any, suffix: str = "") -> list[tuple[type, str]]:
    """The section classes inside a type hint; ``[]`` marks those in a list."""
    if isinstance(tp, type) and issubclass(tp, Section):
        return [(tp, suffix)]
    inner = "[]" if typing.get_origin(tp) is tuple else suffix
    return [found for arg in typing.get_args(tp) for found in nested(arg, inner)]


def dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def yaml_value(value: Any) -> str:
    """``value`` as a recipe would spell it (a string quoted only when YAML needs it)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, str):
        # "on"/"off" read as booleans in YAML 1.1, "" as nothing: those need quotes
        plain = value and yaml.load(value, Loader=yaml_loader()) == value
        return value if plain else json.dumps(value)
    return repr(value)


def kind(tp: Any, meta: typing.Mapping[str, Any], links: dict[type, str],
         plural: bool = False) -> str:
    """Type hint + field metadata in a user's words: ``positive number``, ``one of: ...``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        words = [kind(a, meta, links, plural) for a in args if a is not type(None)]
        return " or ".join(words + ["null"] * (type(None) in args))
    if origin is Literal:
        values = ", ".join(f"`{yaml_value(a)}`" for a in args)
        return values if len(args) == 1 else f"one of: {values}"
    if origin is tuple:
        size = "" if len(args) == 2 and args[1] is Ellipsis else f"{len(args)} "
        items = f"list of {size}{kind(args[0], meta, links, plural=True)}"
        return f"{kind(args[0], meta, links)} or {items}" if meta.get(_SINGLE) else items
    if tp in links:
        return f"{'mappings' if plural else 'mapping'} (see {links[tp]})"
    if tp not in NOUNS:  # a new kind of field: say it here rather than print a repr
        raise TypeError(f"recipe_docs.py cannot describe the type {tp!r}")
    noun = NOUNS[tp] + ("s" if plural else "")
    if meta.get(_CHECK):
        return _CHECKS[meta[_CHECK]][0].removeprefix("a ").replace("number", noun)
    return noun


def default(f: dataclasses.Field[Any]) -> str:
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if isinstance(value, Section):  # a whole section: every field at its default
            return "`{}` (all defaults)"
    else:
        value = f.default
    return f"`{yaml_value(value)}`"


def docstring(cls: type) -> tuple[str, dict[str, str]]:
    """A class's description and its ``Args:`` entries (field -> text, one line each)."""
    doc = inspect.getdoc(cls) or ""
    intro, _, args = doc.partition("\nArgs:\n")
    entries: dict[str, str] = {}
    names: list[str] = []
    indent = None
    for line in args.splitlines():
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        match = ENTRY.fullmatch(line.strip())
        if depth < indent:  # the next docstring section (Raises:...)
            break
        if depth == indent and not match:
            raise SystemExit(f"{cls.__name__}: cannot read the Args: line {line.strip()!r}")
        if depth == indent and match:
            names = match[1].split(", ")
            entries.update(dict.fromkeys(names, match[2]))
        else:  # a continuation line of the entry above
            entries.update({n: f"{entries[n]} {line.strip()}" for n in names})
    paragraphs = [" ".join(p.split()) for p in intro.split("\n\n")]
    return "\n\n".join(paragraphs), entries


def markdown(text: str, links: dict[str, str]) -> str:
    """reST bits of a docstring as markdown; ``:class:`X``` links to X's section."""
    text = re.sub(r":\w+:`~?([\w.]+)`",
                  lambda m: links.get(m[1].rsplit(".", 1)[-1], f"`{m[1]}`"), text)
    # ``epoch`` s is reST for a plural; markdown needs no space
    return re.sub(r"``(.+?)``( s\b)?", lambda m: f"`{m[1]}`" + ("s" if m[2] else ""), text)


def anchor(title: str) -> str:
    """The id GitHub gives a heading: ``stages[]`` -> ``#stages``."""
    return "#" + re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def recipe_list() -> str:
    """Each shipped recipe with the first sentence of its opening comment."""
    lines = []
    for path in sorted(RECIPES.glob("*.yaml")):
        comment = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("#").strip())
        # a sentence ends at ". " before a capital ("e.g. the" goes on)
        first = re.split(r"(?<=\.)\s+(?=[A-Z])", " ".join(comment), maxsplit=1)[0]
        lines.append(f"- `recipes/{path.name}`" + (f": {first}" if first else ""))
    return "\n".join(lines)


def error(data: dict[str, Any]) -> str:
    """The message a bad recipe gets, produced live so the intro cannot misquote it."""
    try:
        recipe_from_dict(data, "my.yaml")
    except ConfigError as exc:
        return str(exc)
    raise AssertionError(f"{data} was accepted")


INTRO = """# Recipe reference

A recipe is a YAML file of training settings for `irconvert binarize`: how long
to train, the optimizer and learning-rate schedule, the EDE schedule, what to
binarize, data preprocessing, distillation and optional stages. Give one with
`--recipe FILE`; a field left out keeps its default (below), and
`--dry-run` prints the resolved recipe. Without `--recipe`, a recognised
architecture gets its shipped recipe and anything else the defaults.

The shipped recipes live in `recipes/` (`irconvert/recipes/` in the package):

{recipes}

`--set key=value` overrides any field from the command line by its dotted
name (`--set optimizer.lr=2e-3 --set data.flip=false`), after the recipe is
read. The value is parsed as YAML, as in a recipe file, so
`--set 'data.color_jitter=[0.4, 0.4, 0.4, 0.1]'` is a list and `--set
distill=null` turns distillation off; a field of one stage is changed by
giving the whole `stages` list. An unknown field or a bad
value is one line that names the field:

```text
{unknown}
{bad}
```

Generated from the config dataclasses (`irconvert/config/`) by
`python tools/recipe_docs.py`; a test fails when this page is stale.
"""


def render() -> str:
    found = sections()
    titles = {cls: f"`{name}`" if name else "Top level" for cls, name in found.items()}
    links = {cls: f"[{titles[cls]}]({anchor(titles[cls])})" for cls in found}
    by_name = {cls.__name__: link for cls, link in links.items()}
    out = [INTRO.format(recipes=recipe_list(),
                        unknown=error({"optimizer": {"learning_rate": 0.1}}),
                        bad=error({"optimizer": {"lr": "abc"}}))]
    missing, stray = [], []
    for cls, prefix in found.items():
        about, entries = docstring(cls)
        out += [f"### {titles[cls]}", "", markdown(about, by_name), "",
                "| field | type | default | meaning |", "| --- | --- | --- | --- |"]
        hints = typing.get_type_hints(cls)
        # an entry for a field that is gone (renamed, removed) is as wrong as a missing one
        stray += [f"{cls.__name__}.{n}" for n in entries if n not in hints]
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in entries:
                missing.append(f"{cls.__name__}.{f.name}")
                continue
            cells = [f"`{dotted(prefix, f.name)}`", kind(hints[f.name], f.metadata, links),
                     default(f), markdown(entries[f.name], by_name)]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    if missing:  # a blank meaning would look documented; make the author write one
        raise SystemExit("undocumented recipe fields (add them to the Args: section of "
                         f"their dataclass's docstring): {', '.join(missing)}")
    if stray:
        raise SystemExit(f"Args: entries for fields that do not exist: {', '.join(stray)}")
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print("docs/recipes.md is stale: run python tools/recipe_docs.py", file=sys.stderr)
            return 1
        return 0
    tmp = DOC.with_suffix(".md.tmp")  # written beside it and renamed: never half-written
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
