"""Recipe files: read, validate, write and override training recipes (YAML).

A recipe is a YAML mapping whose keys are the fields of
:class:`~irconvert.config.TrainConfig` (the dataclasses live in
:mod:`irconvert.config.training`). Every field is checked on load,
and a bad one is reported as one line naming the file and the dotted field::

    recipes/x.yaml: field 'optimizer.lr' must be a positive number, got 'abc'
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from irconvert.config import (
    TrainConfig,
)
from irconvert.errors import ConfigError

__all__ = [
    "SHIPPED_RECIPES",
    "apply_overrides",
    "find_recipe",
    "load_recipe",
    "parse_sets",
    "recipe_from_dict",
    "save_recipe",
    "shipped_recipes",
    "yaml_loader",
]


def recipe_from_dict(data: dict[str, Any], source: str = "") -> TrainConfig:
    """Validate a plain dict (parsed YAML) into a :class:`TrainConfig`.

    Raises:
        ConfigError: one line, prefixed with ``source`` when given.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source + ': ' if source else ''}a recipe must be a mapping of "
                          f"fields, got {type(data).__name__}")
    try:
        return TrainConfig.from_dict(data)
    except ConfigError as exc:
        if not source:
            raise
        raise ConfigError(f"{source}: {exc}") from None


# The recipes irconvert ships, inside the package (``recipes/`` in a checkout
# is a link to it), so that an installed irconvert finds them by name.
SHIPPED_RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def shipped_recipes() -> list[str]:
    """The names of the shipped recipes (file stems), sorted."""
    return sorted(p.stem for p in SHIPPED_RECIPES.glob("*.yaml"))


def find_recipe(spec: str | os.PathLike[str]) -> Path:
    """The recipe file ``spec`` means: a path, or a shipped recipe's name.

    A name works with or without ``.yaml`` and with a ``recipes/`` prefix
    (as the docs write it), from any directory.

    Raises:
        ConfigError: neither; the message lists the shipped names.
    """
    p = Path(spec)
    if p.is_file():
        return p
    name = p.name[: -len(p.suffix)] if p.suffix in (".yaml", ".yml") else p.name
    shipped = SHIPPED_RECIPES / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    names = shipped_recipes()
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"{spec}: recipe file not found, nor a shipped recipe; {hint}"
                      f"shipped: {', '.join(names)} ('irconvert recipes' lists them)")


def load_recipe(path: str | os.PathLike[str]) -> TrainConfig:
    """Read and validate a YAML recipe file (a path, or a shipped recipe's name).

    Raises:
        ConfigError: the file is missing, not YAML, or a field is invalid.
    """
    import yaml

    p = find_recipe(path)
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=yaml_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    return recipe_from_dict(data or {}, str(path))


def yaml_loader() -> Any:
    """A safe YAML loader that also reads ``1e-4`` as a number (YAML 1.1 needs ``1.0e-4``)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return Loader


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", ...]`` -> ``{"a.b": 1}`` (``--set``), values read as YAML scalars or lists.

    Read like a recipe file, so ``lr=2e-3`` is a number there too (plain
    YAML 1.1 reads it as a string).

    Raises:
        ConfigError: an item is not ``KEY=VALUE`` or its value is not YAML.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{item!r} is not KEY=VALUE")
        try:
            out[key.strip()] = yaml.load(raw, Loader=yaml_loader())
        except yaml.YAMLError:
            raise ConfigError(f"{item!r}: the value is not valid YAML") from None
    return out


def save_recipe(config: TrainConfig, path: str | os.PathLike[str]) -> None:
    """Write ``config`` as YAML, atomically."""
    import yaml

    from irconvert.atomic import write_text

    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def apply_overrides(config: TrainConfig, overrides: dict[str, Any],
                    sets: dict[str, Any] | None = None) -> TrainConfig:
    """A copy of ``config`` with dotted fields replaced (``{"optimizer.lr": 0.01}``).

    ``None`` values in ``overrides`` are ignored, so unset command-line
    options change nothing; ``sets`` (``--set KEY=VALUE``), applied after
    them, are taken as given, so ``{"distill": None}`` turns distillation off.
    """
    data = config.to_dict()
    given = [(k, v) for k, v in overrides.items() if v is not None]
    for key, value in [*given, *(sets or {}).items()]:
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return recipe_from_dict(data, "override")
