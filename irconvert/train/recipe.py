"""Training recipes: frozen, validated dataclasses that round-trip through YAML.

A recipe is a YAML mapping whose keys are the fields of :class:`TrainConfig`;
nested sections (``optimizer``, ``schedule``, ``ede``, ``binarize``, ``data``,
``distill``) are mappings of their own. Every field is checked on load, and a
bad one is reported as one line naming the file and the dotted field::

    recipes/x.yaml: field 'optimizer.lr' must be a positive number, got 'abc'
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from irconvert.config import BinarizeConfig, EDEConfig
from irconvert.errors import ConfigError

__all__ = [
    "DataConfig",
    "DistillConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "load_recipe",
    "recipe_from_dict",
    "save_recipe",
]

C = TypeVar("C")

# Field metadata key: an extra constraint the type alone does not say.
_CHECK = "check"
_CHECKS = {
    "positive": ("a positive number", lambda v: v > 0),
    "nonneg": ("a number >= 0", lambda v: v >= 0),
    "unit": ("a number in [0, 1]", lambda v: 0 <= v <= 1),
    "unit_open": ("a number in [0, 1)", lambda v: 0 <= v < 1),
}


def _pos(**kw: Any) -> Any:
    return field(metadata={_CHECK: "positive"}, **kw)


def _nonneg(**kw: Any) -> Any:
    return field(metadata={_CHECK: "nonneg"}, **kw)


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


def _fail(path: str, what: str, value: Any) -> ConfigError:
    return ConfigError(f"field {path!r} must be {what}, got {value!r}")


def _check(path: str, tp: Any, value: Any, check: str | None = None) -> Any:
    """Validate ``value`` against type ``tp``; returns it normalised (lists -> tuples)."""
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
                return _check(path, arg, value, check)
            except ConfigError as exc:
                errors.append(exc)
        kinds = [_describe(a) for a in args if a is not type(None)]
        if type(None) in args:
            kinds.append("null")
        if len(errors) == 1:
            raise errors[0]
        raise _fail(path, " or ".join(kinds), value)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool) != any(
                isinstance(a, bool) for a in allowed if a == value):
            raise _fail(path, _describe(tp), value)
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):  # type: ignore[arg-type]
            return value
        if not isinstance(value, dict):
            raise _fail(path, "a mapping", value)
        return _build(tp, value, path)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(path, "true or false", value)
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
            raise _fail(path, what, value)
        return float(value) if tp is float else value
    if tp is str:
        if not isinstance(value, str):
            raise _fail(path, "a string", value)
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _fail(path, _describe(tp), value)
        args = typing.get_args(tp)
        item_tp = args[0]
        fixed = len(args) != 2 or args[1] is not Ellipsis
        if fixed and len(value) != len(args):
            raise _fail(path, f"a list of {len(args)} values", value)
        return tuple(_check(f"{path}[{i}]", item_tp, v, check) for i, v in enumerate(value))
    raise TypeError(f"unsupported recipe field type {tp!r}")  # a bug, not user input


@typing.no_type_check
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown field {name!r}; allowed: {', '.join(sorted(fields))}")
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        kwargs[key] = _check(path, hints[key], value, fields[key].metadata.get(_CHECK))
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if where and not str(exc).startswith("field "):
            raise ConfigError(f"{where}: {exc}") from None
        raise


def _validate_self(obj: Any) -> None:
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = _check(f.name, hints[f.name], getattr(obj, f.name), f.metadata.get(_CHECK))
        object.__setattr__(obj, f.name, value)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        to_dict = getattr(obj, "to_dict", None)
        if to_dict is not None and not isinstance(obj, _Section):
            return to_dict()
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


class _Section:
    """Mixin: validate every field from its type hint; dict round-trip."""

    def __post_init__(self) -> None:
        _validate_self(self)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _to_plain(getattr(self, f.name))
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
        return _build(cls, data, where)


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig(_Section):
    """Optimizer. Weight decay never applies to BatchNorm parameters or biases.

    Args:
        name: ``sgd``, ``adam`` or ``adamw``.
        lr: peak learning rate (after warmup).
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        weight_decay: L2 / decoupled decay on conv and linear weights only.
        betas: Adam/AdamW betas.
    """

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = _pos(default=0.1)
    momentum: float = field(default=0.9, metadata={_CHECK: "unit_open"})
    nesterov: bool = False
    weight_decay: float = _nonneg(default=1e-4)
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={_CHECK: "unit_open"})


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig(_Section):
    """Learning-rate schedule, optionally after a linear warmup.

    Args:
        name: ``cosine`` (to ``min_lr`` at the end), ``step`` (x ``gamma`` at
            each milestone) or ``constant``.
        unit: whether ``milestones`` and warmup count ``epoch`` s or ``step`` s.
        milestones: for ``step``: where the lr is multiplied by ``gamma``.
        gamma: the factor at each milestone.
        warmup: length of the linear warmup, in ``unit`` s (0: none).
        warmup_start_lr: lr at the start of warmup (0 when null).
        min_lr: final lr of the cosine schedule.
    """

    name: Literal["cosine", "step", "constant"] = "cosine"
    unit: Literal["epoch", "step"] = "epoch"
    milestones: tuple[int, ...] = _nonneg(default=())
    gamma: float = _pos(default=0.1)
    warmup: int = _nonneg(default=0)
    warmup_start_lr: float | None = _nonneg(default=None)
    min_lr: float = _nonneg(default=0.0)


@dataclass(frozen=True, kw_only=True)
class DataConfig(_Section):
    """Preprocessing and augmentation.

    Args:
        mean, std: per-channel normalisation, or ``model``: the model's own
            (timm ``pretrained_cfg``; ImageNet statistics otherwise, which is
            what the shared CIFAR-10 ResNet weights were trained with).
        crop: training crop size (null: the image size).
        padding: zero padding before the random crop (CIFAR: 4).
        random_resized_crop: ImageNet-style scale/aspect crop instead.
        flip: random horizontal flip.
        color_jitter: brightness, contrast, saturation, hue (empty: off).
        eval_resize: resize the shorter side before the centre crop (null: no).
        eval_crop: centre crop at evaluation (null: no crop).
        gpu_cache: keep the whole (small) training set as one uint8 tensor on
            the training device and augment it there.
        pin_memory: pinned host memory for CUDA transfers.
    """

    mean: Literal["model"] | tuple[float, ...] = "model"
    std: Literal["model"] | tuple[float, ...] = "model"
    crop: int | None = _pos(default=None)
    padding: int = _nonneg(default=0)
    random_resized_crop: bool = False
    flip: bool = True
    color_jitter: tuple[float, ...] = _nonneg(default=())
    eval_resize: int | None = _pos(default=None)
    eval_crop: int | None = _pos(default=None)
    gpu_cache: bool = False
    pin_memory: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.mean == "model") != (self.std == "model"):
            raise ConfigError("field 'data.mean' and 'data.std' must both be 'model' or both "
                              f"lists, got mean={self.mean!r}, std={self.std!r}")
        if self.mean != "model" and (len(self.mean) not in (1, 3)
                                     or len(self.std) != len(self.mean)):
            raise _fail("data.mean", "a list of 1 or 3 numbers, as long as data.std",
                        list(self.mean))
        if self.std != "model" and any(s <= 0 for s in self.std):
            raise _fail("data.std", "a list of positive numbers", list(self.std))
        if len(self.color_jitter) not in (0, 4):
            raise _fail("data.color_jitter", "a list of 4 numbers (brightness, contrast, "
                        "saturation, hue) or []", list(self.color_jitter))


@dataclass(frozen=True, kw_only=True)
class DistillConfig(_Section):
    """Distillation from the original full-precision model (a frozen teacher).

    Args:
        alpha: weight of the distillation term (1 - alpha on the labels).
        temperature: softmax temperature of the distillation term.
    """

    alpha: float = field(default=0.5, metadata={_CHECK: "unit"})
    temperature: float = _pos(default=1.0)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(_Section):
    """A complete fine-tuning recipe.

    Args:
        epochs: training length in epochs (or give ``steps``).
        steps: training length in optimizer steps (wins over ``epochs``).
        batch_size: images per step per process.
        optimizer, schedule, ede, binarize, data, distill: sections.
        amp: mixed precision on CUDA: ``none``, ``bf16`` or ``fp16``.
        channels_last: NHWC memory format on CUDA.
        compile: ``torch.compile`` the model.
        grad_clip: clip the gradient norm to this (0: off).
        seed: seeds python, numpy, torch and the data order.
        workers: DataLoader worker processes.
        label_smoothing: cross-entropy label smoothing.
        eval_every: evaluate every N epochs (and always after the last).
        bn_recalibration: before fine-tuning, re-estimate BatchNorm statistics
            of the converted model over this many training batches (0: off).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
    """

    epochs: int = _pos(default=10)
    steps: int | None = _pos(default=None)
    batch_size: int = _pos(default=128)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ede: EDEConfig = field(default_factory=EDEConfig)
    binarize: BinarizeConfig = field(default_factory=BinarizeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    distill: DistillConfig | None = None
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    grad_clip: float = _nonneg(default=0.0)
    seed: int = _nonneg(default=0)
    workers: int = _nonneg(default=2)
    label_smoothing: float = field(default=0.0, metadata={_CHECK: "unit_open"})
    eval_every: int = _pos(default=1)
    bn_recalibration: int = _nonneg(default=0)
    device: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.schedule.name == "step" and not self.schedule.milestones:
            raise ConfigError("field 'schedule.milestones' must be a non-empty list for "
                              "schedule.name 'step', got []")
        if list(self.schedule.milestones) != sorted(self.schedule.milestones):
            raise _fail("schedule.milestones", "an increasing list",
                        list(self.schedule.milestones))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> TrainConfig:
        return recipe_from_dict(data)


# The package-level dataclasses (BinarizeConfig, EDEConfig) check themselves;
# the type walk above checks their fields by dotted name first.
def recipe_from_dict(data: dict[str, Any], source: str = "") -> TrainConfig:
    """Validate a plain dict (parsed YAML) into a :class:`TrainConfig`.

    Raises:
        ConfigError: one line, prefixed with ``source`` when given.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source + ': ' if source else ''}a recipe must be a mapping of "
                          f"fields, got {type(data).__name__}")
    try:
        return _build(TrainConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None


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
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    return recipe_from_dict(data or {}, str(path))


def _loader() -> Any:
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


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of ``config`` with dotted fields replaced (``{"optimizer.lr": 0.01}``).

    ``None`` values are ignored, so unset command-line options change nothing.
    """
    data = config.to_dict()
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return recipe_from_dict(data, "override")
