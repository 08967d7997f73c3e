"""BinarizeConfig / EDEConfig: validation with helpful messages, dict round trips."""

from __future__ import annotations

import re
from typing import Any

import pytest

from irconvert.config import BinarizeConfig, EDEConfig, config_from_dict
from irconvert.errors import ConfigError, IRConvertError


def test_defaults_are_the_paper() -> None:
    cfg = BinarizeConfig()
    assert cfg.act_bits == 1 and cfg.binary_activations and cfg.transforms_blocks
    assert cfg.keep_stem and cfg.keep_classifier and cfg.keep_downsample
    assert cfg.keep_depthwise and cfg.keep_grouped
    ede = EDEConfig()
    assert (ede.t_min, ede.t_max, ede.per) == (0.1, 10.0, "epoch")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(act_bits=2), "field 'act_bits' must be one of 1, 32, got 2"),
        (dict(act_bits=True), "field 'act_bits' must be one of 1, 32, got True"),
        (dict(act_bits="1"), "field 'act_bits' must be one of 1, 32"),
        (dict(include=[1, 2]), r"field 'include\[0\]' must be a string, got 1"),
        (dict(exclude=5), "field 'exclude' must be a list of strings, got 5"),
        (dict(keep_stem="yes"), "field 'keep_stem' must be true or false"),
        (dict(keep_classifier=1), "field 'keep_classifier' must be true or false"),
        (dict(keep_downsample=None), "field 'keep_downsample' must be true or false"),
        (dict(keep_depthwise=0), "field 'keep_depthwise' must be true or false"),
        (dict(keep_grouped="no"), "field 'keep_grouped' must be true or false"),
        (dict(block_transform="maybe"), "field 'block_transform' must be one of auto, on, off"),
    ],
)
def test_binarize_config_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        BinarizeConfig(**kwargs)
    assert isinstance(info.value, IRConvertError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(t_min=0), "field 't_min' must be a positive"),
        (dict(t_min=-1.0), "field 't_min' must be a positive"),
        (dict(t_max="10"), "field 't_max' must be a positive"),
        (dict(t_max=True), "field 't_max' must be a positive"),
        (dict(t_max=float("inf")), "field 't_max' must be a positive"),
        (dict(t_min=float("nan")), "field 't_min' must be a positive"),
        (dict(t_min=20.0), r"field 't_min' must be at most t_max \(10.0\), got 20.0"),
        (dict(per="batch"), "field 'per' must be one of epoch, step"),
    ],
)
def test_ede_config_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EDEConfig(**kwargs)


def test_positional_arguments_rejected() -> None:
    with pytest.raises(TypeError):
        BinarizeConfig(32)  # type: ignore[misc]


def test_frozen_and_hashable() -> None:
    cfg = BinarizeConfig(include=["layer*"], exclude="fc")
    assert cfg.include == ("layer*",) and cfg.exclude == ("fc",)
    hash(cfg)
    with pytest.raises(AttributeError):
        cfg.act_bits = 32  # type: ignore[misc]


@pytest.mark.parametrize(
    "cfg",
    [
        BinarizeConfig(),
        BinarizeConfig(act_bits=32, include=("layer1.*", "layer2.*"), exclude=("*.conv2",),
                       keep_stem=False, keep_classifier=False, keep_downsample=False,
                       keep_depthwise=False, keep_grouped=False, block_transform="off"),
        EDEConfig(),
        EDEConfig(t_min=0.001, t_max=10, per="step"),
    ],
)
def test_dict_round_trip(cfg: BinarizeConfig | EDEConfig) -> None:
    data = cfg.to_dict()
    assert all(not isinstance(v, tuple) for v in data.values())  # YAML-friendly
    assert type(cfg).from_dict(data) == cfg
    assert type(cfg).from_dict(dict(data)).to_dict() == data


def test_binarize_config_dict_has_every_field() -> None:
    assert set(BinarizeConfig().to_dict()) == {
        "act_bits", "include", "exclude", "keep_stem", "keep_classifier", "keep_downsample",
        "keep_depthwise", "keep_grouped", "keep_se", "block_transform", "act_threshold",
        "block_act", "one_signed_inputs",
    }


def test_unknown_key_names_allowed_keys() -> None:
    with pytest.raises(ConfigError) as info:
        BinarizeConfig.from_dict({"act_bit": 1}, where="binarize")
    msg = str(info.value)
    assert msg.startswith("unknown field 'binarize.act_bit'; did you mean 'binarize.act_bits'? "
                          "allowed: ")
    assert "act_bits" in msg and "keep_stem" in msg and "block_transform" in msg
    with pytest.raises(ConfigError) as far:  # nothing close: no guess
        BinarizeConfig.from_dict({"zzzz": 1})
    assert "did you mean" not in str(far.value)
    with pytest.raises(ConfigError, match=re.escape(
            "unknown field 'tmin'; did you mean 't_min'? allowed: per, t_max, t_min")):
        EDEConfig.from_dict({"tmin": 0.1})


def test_from_dict_validates_values_and_types() -> None:
    with pytest.raises(ConfigError, match=r"field 'ede\.t_min' must be a positive"):
        EDEConfig.from_dict({"t_min": -1}, where="ede")
    with pytest.raises(ConfigError, match="field 'act_bits' must be one of 1, 32, got 8"):
        BinarizeConfig.from_dict({"act_bits": 8})
    with pytest.raises(ConfigError, match="expected a mapping"):
        config_from_dict(EDEConfig, ["t_min"])  # type: ignore[arg-type]


def test_transforms_blocks_modes() -> None:
    assert not BinarizeConfig(act_bits=32).transforms_blocks
    assert BinarizeConfig(act_bits=32, block_transform="on").transforms_blocks
    assert not BinarizeConfig(act_bits=1, block_transform="off").transforms_blocks
