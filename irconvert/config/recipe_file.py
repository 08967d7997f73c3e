"""Recipe files: read, validate, write and override training recipes (YAML).

A recipe is a YAML mapping whose keys are the fields of
:class:`~irconvert.config.TrainConfig` (the dataclasses live in
:mod:`irconvert.config.training`). Every field is checked on load,
and a bad one is reported as one line naming the file and the dotted field::

    recipes/x.yaml: field 'optimizer.lr' must be a positive number, got 'abc'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from irconvert.config import (
    TrainConfig,
)
from irconvert.errors import ConfigError

__all__ = [
    "apply_overrides",
    "load_recipe",
    "recipe_from_dict",
    "save_recipe",
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


def load_recipe(path: str | os.PathLike[str]) -> TrainConfig:
    """Read and validate a YAML recipe file.

    Raises:
        ConfigError: the file is missing, not YAML, or a field is invalid.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: recipe file not found")
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
