"""The one validation mechanism every configuration dataclass uses.

A config is a frozen, keyword-only dataclass deriving from :class:`Section`.
On creation each field is checked against its type hint (``int``, ``float``,
``bool``, ``str``, ``Literal[...]``, ``tuple[...]``, ``X | None``, a nested
section), plus an optional constraint in the field's metadata
(:func:`positive`, :func:`nonneg`, :func:`unit`, :func:`unit_open`); rules
that tie fields together go in :meth:`Section.check_fields`. Every problem is
one line that names the dotted field::

    field 'optimizer.lr' must be a positive number, got 'abc'

Every section round-trips through a plain dict (``to_dict``/``from_dict``),
so recipes (YAML) and checkpoints can hold it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import field
from typing import Any, Literal, TypeVar, Union

from irconvert.errors import ConfigError

__all__ = [
    "FieldError",
    "Section",
    "config_from_dict",
    "nonneg",
    "one_or_many",
    "positive",
    "unit",
    "unit_open",
]

C = TypeVar("C")

# Field metadata keys: an extra constraint the type alone does not say, and
# whether a single string stands for a one-element list.
_CHECK = "check"
_SINGLE = "single"
_CHECKS = {
    "positive": ("a positive number", lambda v: v > 0),
    "nonneg": ("a number >= 0", lambda v: v >= 0),
    "unit": ("a number in [0, 1]", lambda v: 0 <= v <= 1),
    "unit_open": ("a number in [0, 1)", lambda v: 0 <= v < 1),
}


def positive(**kw: Any) -> Any:
    """A field whose number (or every number of whose list) must be > 0."""
    return field(metadata={_CHECK: "positive"}, **kw)


def nonneg(**kw: Any) -> Any:
    """A field whose number(s) must be >= 0."""
    return field(metadata={_CHECK: "nonneg"}, **kw)


def unit(**kw: Any) -> Any:
    """A field whose number(s) must lie in [0, 1]."""
    return field(metadata={_CHECK: "unit"}, **kw)


def unit_open(**kw: Any) -> Any:
    """A field whose number(s) must lie in [0, 1)."""
    return field(metadata={_CHECK: "unit_open"}, **kw)


def one_or_many(**kw: Any) -> Any:
    """A ``tuple[str, ...]`` field that also takes a single string."""
    return field(metadata={_SINGLE: True}, **kw)


class FieldError(ConfigError):
    """``field 'path' must be <what>, got <value>``, as one line.

    ``path`` is relative to the section that raised it; a section built as
    part of a larger one (``binarize`` in a recipe) gets its name prefixed.
    ``refs`` are other fields the rule mentions (relative too): ``what``
    names them as ``{0}``, ``{1}``... so they are prefixed the same way.
    """

    def __init__(self, path: str, what: str, value: Any, refs: tuple[str, ...] = ()) -> None:
        self.path, self.what, self.value, self.refs = path, what, value, refs
        shown = list(value) if isinstance(value, tuple) else value
        super().__init__(f"field {path!r} must be {what.format(*refs)}, got {shown!r}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (the message is rebuilt)
        return (type(self), (self.path, self.what, self.value, self.refs))

    def within(self, where: str) -> FieldError:
        """The same error, for a section found at ``where`` in a larger one."""
        if not where:
            return self
        return FieldError(_join(where, self.path), self.what, self.value,
                          tuple(_join(where, r) for r in self.refs))


def _join(where: str, path: str) -> str:
    if not where:
        return path
    return f"{where}{path}" if path.startswith("[") else f"{where}.{path}"


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0]).removeprefix('a ')}s"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _check(path: str, tp: Any, value: Any, meta: Mapping[str, Any]) -> Any:
    """Validate ``value`` against type ``tp``; returns it normalised (lists -> tuples).

    Long on purpose: one branch per kind of type hint a field can have, in the
    order they must be tried (None before unions, bool before int); split up,
    that order would live in several places.
    """
    check = meta.get(_CHECK)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(path, arg, value, meta)
            except ConfigError as exc:
                errors.append(exc)
        kinds = [_describe(a) for a in args if a is not type(None)]
        if type(None) in args:
            kinds.append("null")
        if len(errors) == 1:
            raise errors[0]
        raise FieldError(path, " or ".join(kinds), value)
    if origin is Literal:
        # 1.0 == 1 and True == 1: the value must also have the literal's type
        if not any(value == a and type(value) is type(a) for a in typing.get_args(tp)):
            raise FieldError(path, _describe(tp), value)
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):  # type: ignore[arg-type]
            return value
        if not isinstance(value, dict):
            raise FieldError(path, "a mapping", value)
        return build(tp, value, path)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise FieldError(path, "true or false", value)
        return value
    if tp in (int, float):
        ok = isinstance(value, int if tp is int else (int, float)) and not isinstance(value, bool)
        if ok and tp is float and not math.isfinite(value):
            ok = False
        what, test = _CHECKS[check] if check else (_describe(tp), None)
        if tp is int and check:
            what = what.replace("a number", "an integer").replace("a positive number",
                                                                   "a positive integer")
        if not ok or (test is not None and not test(value)):
            raise FieldError(path, what, value)
        return float(value) if tp is float else value
    if tp is str:
        if not isinstance(value, str):
            raise FieldError(path, "a string", value)
        return value
    if origin is tuple:
        if isinstance(value, str) and meta.get(_SINGLE):
            value = (value,)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise FieldError(path, _describe(tp), value)
        args = typing.get_args(tp)
        item_tp = args[0]
        fixed = len(args) != 2 or args[1] is not Ellipsis
        if fixed and len(value) != len(args):
            raise FieldError(path, f"a list of {len(args)} values", value)
        return tuple(_check(f"{path}[{i}]", item_tp, v, meta) for i, v in enumerate(value))
    raise TypeError(f"unsupported config field type {tp!r}")  # a bug, not user input


@functools.cache
@typing.no_type_check
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    """Build section ``cls`` from a dict; ``where`` is its dotted path in a larger one."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(fields), n=1, cutoff=0.6)
        hint = f"did you mean {_join(where, close[0])!r}? " if close else ""
        raise ConfigError(f"unknown field {_join(where, unknown[0])!r}; {hint}"
                          f"allowed: {', '.join(sorted(fields))}")
    hints = _hints(cls)
    kwargs = {key: _check(_join(where, key), hints[key], value, fields[key].metadata)
              for key, value in data.items()}
    try:
        return cls(**kwargs)
    except FieldError as exc:  # a rule between fields, named relative to ``cls``
        raise exc.within(where) from None


def config_from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    """Build config dataclass ``cls`` from a plain dict, rejecting unknown keys by name.

    ``where``: the dotted path of this section in a larger config, used in
    error messages (``binarize`` -> ``field 'binarize.act_bits' ...``).
    """
    if not isinstance(data, dict):
        if where:
            raise FieldError(where, "a mapping", data)
        raise ConfigError(f"expected a mapping of fields, got {type(data).__name__}")
    return build(cls, data, where)


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, Section):
        return obj.to_dict()
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


class Section:
    """Base of every config dataclass: typed fields checked on creation, dict round trip.

    Subclasses are ``@dataclass(frozen=True, kw_only=True)``; rules between
    fields go in :meth:`check_fields`, raising :class:`FieldError`.
    """

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = _check(f.name, hints[f.name], getattr(self, f.name), f.metadata)
            object.__setattr__(self, f.name, value)
        self.check_fields()

    def check_fields(self) -> None:
        """Rules between fields (every field is already valid on its own here)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists, not tuples), in field order: YAML- and torch.save-safe."""
        return {f.name: _to_plain(getattr(self, f.name))
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
        return config_from_dict(cls, data, where)
