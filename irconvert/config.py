"""Frozen, keyword-only configuration dataclasses, validated on creation.

Every config round-trips through a plain dict (``to_dict``/``from_dict``) so
recipes (YAML) and checkpoints can hold it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from irconvert.errors import ConfigError

__all__ = ["BinarizeConfig", "EDEConfig", "config_from_dict"]

C = TypeVar("C")


def config_from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys by name."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if not isinstance(data, dict):
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}expected a mapping of fields, got {type(data).__name__}")
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}: " if where else ""
        raise ConfigError(
            f"{prefix}unknown field {unknown[0]!r}; allowed: {', '.join(sorted(names))}"
        )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # say where in the recipe the bad value is
        if not where:
            raise
        raise ConfigError(f"{where}: {exc}") from None
    except TypeError as exc:  # a wrong type the field check could not name
        raise ConfigError(f"{where + ': ' if where else ''}{exc}") from None


def _to_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


@dataclass(frozen=True, kw_only=True)
class BinarizeConfig:
    """What to binarize and how.

    Args:
        act_bits: 1 for 1W/1A (binary activations), 32 for 1W/32A (weights only).
        include: glob patterns on dotted module names; a matching layer is
            binarized even if a ``keep_*`` default would keep it.
        exclude: glob patterns; a matching layer stays full precision (wins
            over ``include``).
        keep_stem: keep the first convolution in full precision.
        keep_classifier: keep the final classifier in full precision.
        keep_downsample: keep 1x1 convolutions of residual shortcuts.
        keep_depthwise: keep depthwise convolutions (groups == in_channels).
        keep_grouped: keep other grouped convolutions (1 < groups < in_channels).
        keep_se: keep the layers of squeeze-and-excitation gates (their input
            is a pooled ReLU output: every activation bit would be +1).
        block_transform: rewrite recognised residual blocks for binarization
            (Hardtanh instead of ReLU, a shortcut around every binarized conv).
            ``"auto"`` does it for 1W/1A only.
    """

    act_bits: Literal[1, 32] = 1
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    keep_stem: bool = True
    keep_classifier: bool = True
    keep_downsample: bool = True
    keep_depthwise: bool = True
    keep_grouped: bool = True
    keep_se: bool = True
    block_transform: Literal["auto", "on", "off"] = "auto"

    def __post_init__(self) -> None:
        # bool is an int: ``act_bits=True`` must not pass as 1
        if (isinstance(self.act_bits, bool) or not isinstance(self.act_bits, int)
                or self.act_bits not in (1, 32)):
            raise ConfigError(f"act_bits must be 1 or 32, got {self.act_bits!r}")
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            # a list would make the frozen config unhashable: store a tuple
            if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
                raise ConfigError(f"{name} must be a list of glob patterns, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        for name in ("keep_stem", "keep_classifier", "keep_downsample",
                     "keep_depthwise", "keep_grouped", "keep_se"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.block_transform not in ("auto", "on", "off"):
            raise ConfigError(
                f"block_transform must be auto, on or off, got {self.block_transform!r}"
            )

    @property
    def binary_activations(self) -> bool:
        return self.act_bits == 1

    @property
    def transforms_blocks(self) -> bool:
        """Whether residual blocks are rewritten (``auto``: for 1W/1A only)."""
        if self.block_transform == "auto":
            return self.binary_activations
        return self.block_transform == "on"

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> BinarizeConfig:
        return config_from_dict(cls, data, where)


@dataclass(frozen=True, kw_only=True)
class EDEConfig:
    """The EDE schedule: ``t`` grows log-linearly from ``t_min`` to ``t_max``.

    Args:
        t_min: temperature at the start (the paper: 0.1; the authors' CIFAR
            ResNet-20 1W/1A script: 0.001).
        t_max: temperature at the end (10).
        per: update ``t``, ``k`` once per ``"epoch"`` (the paper) or every
            ``"step"`` (smoother).
    """

    t_min: float = 0.1
    t_max: float = 10.0
    per: Literal["epoch", "step"] = "epoch"

    def __post_init__(self) -> None:
        for name in ("t_min", "t_max"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value <= 0):
                raise ConfigError(f"{name} must be a positive, finite number, got {value!r}")
        if self.t_min > self.t_max:
            raise ConfigError(f"t_min ({self.t_min}) must not exceed t_max ({self.t_max})")
        if self.per not in ("epoch", "step"):
            raise ConfigError(f"per must be epoch or step, got {self.per!r}")

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> EDEConfig:
        return config_from_dict(cls, data, where)


