"""Latent-weight constraints (recipe ``latent``): the arithmetic, what they leave alone, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from irconvert.config import LatentConfig, OptimizerConfig, ScheduleConfig
from irconvert.config.recipe_file import recipe_from_dict
from irconvert.errors import ConfigError
from irconvert.functional import standardize
from irconvert.nn import IRConv2d, IRLinear
from irconvert.train.latent import constrain_latent_
from irconvert.train.optim import build_optimizer, lr_factor_fn
from tests._train_helpers import cut_and_resume, fit_on_one_thread
from tests.train.test_trainer import _assert_same, make_model, tiny_data, tiny_recipe  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def _layers() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(IRConv2d(4, 6, 3), IRLinear(5, 3, binary_act=False), nn.Conv2d(2, 2, 1))
    with torch.no_grad():  # filters of different spreads and offsets, as after training
        model[0].weight.mul_(torch.linspace(0.05, 3.0, 6).view(6, 1, 1, 1)).add_(0.7)
        model[1].weight.mul_(4.0).sub_(1.0)
    return model


def test_standardize_sets_each_filter_and_keeps_the_binary_weights() -> None:
    model = _layers()
    before = [m.binary_weight().clone() for m in model[:2]]
    # no standardized weight within rounding of 0, where a sign could differ by CPU
    assert all(float(standardize(m.weight.detach()).abs().min()) > 1e-4 for m in model[:2])
    float_weight = model[2].weight.clone()
    assert constrain_latent_(model, LatentConfig(standardize=True)) == 2
    for layer, binary in zip(model[:2], before, strict=True):
        w = layer.weight.flatten(1)
        torch.testing.assert_close(w.mean(1), torch.zeros(len(w)), atol=1e-4, rtol=0)
        torch.testing.assert_close(w.std(1), torch.ones(len(w)), atol=1e-4, rtol=0)
        assert torch.equal(layer.binary_weight(), binary)  # the forward pass is unchanged
    assert torch.equal(model[2].weight, float_weight)  # float layers are not latent weights


def test_clip_bounds_each_filter_by_its_own_spread() -> None:
    model = _layers()
    w0 = model[0].weight.detach().clone().flatten(1)
    mean, std = w0.mean(1, keepdim=True), w0.std(1, keepdim=True)
    constrain_latent_(model, LatentConfig(clip=1.0))
    expected = torch.minimum(torch.maximum(w0, mean - std), mean + std)
    torch.testing.assert_close(model[0].weight.flatten(1), expected)
    assert (w0 - mean).abs().gt(std).any()  # the case clipped something


def test_layers_computing_with_latent_weights_are_left_alone() -> None:
    model = _layers()
    model[0].weights_on = False  # a stage with real weights ("binarize: activations")
    w = model[0].weight.clone()
    assert constrain_latent_(model, LatentConfig(standardize=True, clip=2.0)) == 1
    assert torch.equal(model[0].weight, w)
    assert constrain_latent_(model, LatentConfig()) == 0  # off by default


def test_latent_lr_scale_gives_the_binarized_weights_a_group_of_their_own() -> None:
    model = _layers()
    opt = build_optimizer(model, OptimizerConfig(name="adam", lr=1e-3, latent_lr_scale=5.0,
                                                 norm_lr_scale=0.5, weight_decay=1e-4))
    real, latent, ones = opt.param_groups
    assert {id(p) for p in latent["params"]} == {id(model[0].weight), id(model[1].weight)}
    assert {id(p) for p in real["params"]} == {id(model[2].weight)}  # float conv stays at lr
    assert latent["lr"] == pytest.approx(5e-3) and real["lr"] == pytest.approx(1e-3)
    assert ones["lr"] == pytest.approx(5e-4)
    assert latent["weight_decay"] == real["weight_decay"] == 1e-4
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor_fn(ScheduleConfig(), 1e-3, 10, 1))
    for _ in range(5):
        opt.step()
        sched.step()
    assert latent["lr"] == pytest.approx(2.5e-3) and real["lr"] == pytest.approx(0.5e-3)
    # at 1 (the default) the groups are those of a recipe without the field, so the
    # optimizer state in its checkpoints loads as before
    assert len(build_optimizer(model, OptimizerConfig(name="adam")).param_groups) == 2


def test_the_recipe_section_is_checked() -> None:
    assert recipe_from_dict({}).latent == LatentConfig()
    recipe = recipe_from_dict({"latent": {"standardize": True, "clip": 2.5}})
    assert recipe.latent == LatentConfig(standardize=True, clip=2.5)
    with pytest.raises(ConfigError, match=r"latent\.clip"):
        recipe_from_dict({"latent": {"clip": 0}})
    with pytest.raises(ConfigError, match=r"latent\.spread"):
        recipe_from_dict({"latent": {"spread": 1}})
    with pytest.raises(ConfigError, match=r"optimizer\.latent_lr_scale"):
        recipe_from_dict({"optimizer": {"latent_lr_scale": -1}})


LATENT = {"epochs": 2, "ede": {"t_min": 0.1, "t_max": 10.0, "per": "step"},
          "optimizer": {"name": "adam", "lr": 0.01, "latent_lr_scale": 2.0},
          "latent": {"standardize": True, "clip": 2.0}}


def test_a_run_keeps_its_latent_weights_standardized_and_resumes_exactly(
        tiny_data: str, tmp_path: Path) -> None:  # noqa: F811
    recipe = tiny_recipe(**LATENT)
    fit_on_one_thread(make_model(), tiny_data, recipe, tmp_path / "full", quiet=True)
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    for name in ("conv1.weight", "conv2.weight"):  # TinyNet's two binarized convs
        # standardized after the last step, then clipped at 2 (which narrows it a little)
        w = full["model"][name].flatten(1)
        assert float(w.abs().max()) <= 2.0 + 1e-5
        assert float(w.mean(1).abs().max()) < 0.1
        assert float(w.std(1).min()) > 0.8 and float(w.std(1).max()) <= 1.0 + 1e-5
    assert full["recipe"]["latent"] == {"standardize": True, "clip": 2.0}

    cut_and_resume(make_model, tiny_data, recipe, tmp_path / "cut", at_step=4)
    cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    _assert_same(full["model"], cut["model"])


def test_the_constraint_changes_training(tiny_data: str, tmp_path: Path) -> None:  # noqa: F811
    # the same run without it must end elsewhere: the constraint is applied
    losses = []
    for name, latent in (("on", LATENT["latent"]), ("off", {})):
        recipe = tiny_recipe(**{**LATENT, "epochs": 1, "latent": latent})
        fit_on_one_thread(make_model(), tiny_data, recipe, tmp_path / name, quiet=True)
        losses.append(torch.load(tmp_path / name / "last.pt",
                                 weights_only=True)["history"][-1]["train_loss"])
    assert losses[0] != losses[1]
