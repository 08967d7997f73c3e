"""Recipes: every shipped one validates; every bad field is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from irconvert.config import TrainConfig
from irconvert.config.recipe_file import (
    apply_overrides,
    load_recipe,
    parse_sets,
    recipe_from_dict,
    save_recipe,
)
from irconvert.errors import ConfigError
from tests.conftest import REPO

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def test_all_shipped_recipes_exist() -> None:
    names = {p.name for p in RECIPES}
    assert {"cifar10-resnet20-1w1a.yaml", "cifar10-resnet20-1w32a.yaml",
            "cifar10-vgg-small-1w1a.yaml", "imagenet-resnet18-1w1a.yaml",
            "imagenet-resnet34-1w1a.yaml", "cifar10-resnet20-finetune-1w1a.yaml",
            "cifar10-resnet20-finetune-1w32a.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    recipe = load_recipe(path)
    save_recipe(recipe, tmp_path / "r.yaml")
    assert load_recipe(tmp_path / "r.yaml") == recipe
    if path.name.startswith("cifar10"):  # the shared weights' normalisation, said explicitly
        assert recipe.data.mean == (0.485, 0.456, 0.406)
        assert recipe.data.std == (0.229, 0.224, 0.225)


def test_default_recipes() -> None:
    from irconvert.train.defaults import default_recipe_path

    assert default_recipe_path("cifar_resnet56", 1).name == "cifar10-resnet20-finetune-1w1a.yaml"
    assert default_recipe_path("cifar_resnet20", 32).name == "cifar10-resnet20-finetune-1w32a.yaml"
    # the authors' network has no pretrained weights: their from-scratch recipe
    assert default_recipe_path("irnet_resnet20", 1).name == "cifar10-resnet20-1w1a.yaml"
    assert default_recipe_path("irnet_resnet20", 32) is None
    assert default_recipe_path("cifar_resnet18", 1) is None and default_recipe_path(None, 1) is None


def test_paper_settings() -> None:
    r = {p.name: load_recipe(p) for p in RECIPES}
    a = r["cifar10-resnet20-1w1a.yaml"]
    assert (a.epochs, a.batch_size, a.optimizer.lr, a.optimizer.momentum) == (400, 128, 0.1, 0.9)
    assert a.optimizer.weight_decay == 1e-4 and a.schedule.name == "cosine"
    assert a.optimizer.decay_norms  # the authors' SGD decays every parameter
    assert (a.ede.t_min, a.ede.t_max, a.binarize.act_bits) == (0.001, 10.0, 1)
    b = r["cifar10-resnet20-1w32a.yaml"]
    assert (b.ede.t_min, b.binarize.act_bits) == (0.1, 32)
    v = r["cifar10-vgg-small-1w1a.yaml"]
    assert (v.epochs, v.optimizer.lr) == (300, 0.007)
    for name in ("imagenet-resnet18-1w1a.yaml", "imagenet-resnet34-1w1a.yaml"):
        i = r[name]
        assert i.steps == 62500 and i.batch_size == 64 and i.optimizer.nesterov
        assert i.schedule.milestones == (18750, 37500, 56250) and i.schedule.unit == "step"
        assert (i.schedule.warmup, i.schedule.warmup_start_lr, i.optimizer.lr) == (2500, 0.2, 0.8)
    f = r["cifar10-resnet20-finetune-1w1a.yaml"]
    assert f.distill is not None and f.ede.t_min == 0.1 and f.optimizer.lr <= 0.05
    # the latent lever that beat the recipe at 20 and 160 epochs (docs/benchmarks.md)
    assert f.latent is not None and f.latent.standardize and f.optimizer.latent_lr_scale == 13.33


@pytest.mark.parametrize(("data", "message"), [
    ({"optimizer": {"lr": "abc"}},
     "x.yaml: field 'optimizer.lr' must be a positive number, got 'abc'"),
    ({"optimizer": {"lr": -1}}, "field 'optimizer.lr' must be a positive number, got -1"),
    ({"optimizer": {"name": "rmsprop"}},
     "field 'optimizer.name' must be one of sgd, adam, adamw, got 'rmsprop'"),
    ({"optimizer": {"lrr": 1}}, "unknown field 'optimizer.lrr'; did you mean 'optimizer.lr'? "
                                  "allowed: betas, decay_norms, latent_lr_scale, lr,"),
    ({"epochz": 1}, "unknown field 'epochz'; did you mean 'epochs'? allowed: amp, batch_size,"),
    ({"epochs": 1.5}, "field 'epochs' must be a positive integer, got 1.5"),
    ({"batch_size": True}, "field 'batch_size' must be a positive integer, got True"),
    ({"binarize": {"act_bits": 2}}, "field 'binarize.act_bits' must be one of 1, 32, got 2"),
    ({"binarize": {"keep_stem": "yes"}},
     "field 'binarize.keep_stem' must be true or false, got 'yes'"),
    ({"ede": {"per": "batch"}}, "field 'ede.per' must be one of epoch, step, got 'batch'"),
    ({"ede": {"t_min": 20}}, "field 'ede.t_min' must be at most ede.t_max (10.0), got 20.0"),
    ({"schedule": {"name": "step"}}, "field 'schedule.milestones' must be a non-empty list"),
    ({"schedule": {"milestones": [5, 2]}}, "field 'schedule.milestones' must be an increasing"),
    ({"data": {"mean": [0.5, 0.5]}}, "field 'data.mean'"),
    ({"data": {"color_jitter": [0.1]}}, "field 'data.color_jitter' must be a list of 4"),
    ({"data": "big"}, "field 'data' must be a mapping, got 'big'"),
    ({"distill": {"alpha": 1.5}}, "field 'distill.alpha' must be a number in [0, 1], got 1.5"),
    ({"amp": "fp8"}, "field 'amp' must be one of none, bf16, fp16, got 'fp8'"),
    ({"cpu_memory": "keep"}, "field 'cpu_memory' must be one of retain, release, got 'keep'"),
    ({"budget_minutes": 0}, "field 'budget_minutes' must be a positive number, got 0"),
    ({"budget_minutes": "1h"}, "field 'budget_minutes' must be a positive number, got '1h'"),
])
def test_bad_fields_are_one_line_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        recipe_from_dict(data, "x.yaml")
    text = str(info.value)
    assert message in text and "\n" not in text
    assert text.startswith("x.yaml: ")


def test_yaml_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimizer:\n  lr: abc\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: field 'optimizer.lr' must be a positive"):
        load_recipe(bad)
    bad.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_recipe(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_scientific_notation_reads_as_a_number(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("optimizer: {weight_decay: 1e-4, lr: 5e-2}\n")
    recipe = load_recipe(path)
    assert recipe.optimizer.weight_decay == 1e-4 and recipe.optimizer.lr == 0.05


def test_overrides() -> None:
    base = TrainConfig()
    new = apply_overrides(base, {"epochs": 3, "optimizer.lr": 0.01, "binarize.act_bits": 32,
                                 "seed": None, "distill.alpha": 0.2})
    assert (new.epochs, new.optimizer.lr, new.binarize.act_bits, new.seed) == (3, 0.01, 32, 0)
    assert new.distill is not None and new.distill.alpha == 0.2
    with pytest.raises(ConfigError, match=r"override: field .optimizer\.lr."):
        apply_overrides(base, {"optimizer.lr": 0})
    # --set KEY=null means null: distillation and a time budget can be switched off
    with_kd = apply_overrides(base, {"distill.alpha": 0.5, "budget_minutes": 9.0})
    off = apply_overrides(with_kd, {"seed": None}, {"distill": None, "budget_minutes": None})
    assert (off.distill, off.budget_minutes, off.seed) == (None, None, 0)


def test_parse_sets_reads_values_as_a_recipe_file_does() -> None:
    sets = parse_sets(["optimizer.lr=2e-3", "distill=null", " seed =3", "data.mean=[0.5, 0.5]",
                       "note=a=b"])
    assert sets == {"optimizer.lr": 0.002, "distill": None, "seed": 3,
                    "data.mean": [0.5, 0.5], "note": "a=b"}
    assert parse_sets(None) == {}
    with pytest.raises(ConfigError, match="'nonsense' is not KEY=VALUE"):
        parse_sets(["nonsense"])
    with pytest.raises(ConfigError, match="'=1' is not KEY=VALUE"):
        parse_sets(["=1"])
    with pytest.raises(ConfigError, match="the value is not valid YAML"):
        parse_sets(["data.mean=[0.5"])


def test_dataclasses_validate_on_creation() -> None:
    from irconvert.config import OptimizerConfig

    with pytest.raises(ConfigError, match="field 'lr' must be a positive number"):
        OptimizerConfig(lr=0)
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
