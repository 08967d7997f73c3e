"""Staged recipes: validation, what each stage binarizes, EDE across stages, exact resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from irconvert.config.recipe_file import recipe_from_dict
from irconvert.errors import ConfigError
from irconvert.nn import IRLayer
from irconvert.train.outcome import TrainingInterrupted
from irconvert.train.run import fit
from irconvert.train.trainer import Trainer
from tests.train.test_trainer import _assert_same, _weights, make_model, tiny_data, tiny_recipe

__all__ = ["tiny_data"]  # the module-scoped fixture, shared with test_train

STAGES = [
    {"name": "acts", "epochs": 1, "binarize": "activations",
     "optimizer": {"name": "adam", "lr": 0.002, "weight_decay": 0.0}},
    {"name": "final", "epochs": 2, "binarize": "both", "schedule": {"name": "linear"}},
]


pytestmark = pytest.mark.usefixtures("one_thread")


def staged(**over: Any) -> Any:
    base: dict[str, Any] = {"stages": STAGES, "binarize": {"act_bits": 1, "act_threshold": True},
                            "ede": {"t_min": 0.1, "t_max": 10.0, "per": "step"},
                            "bn_recalibration": 2}
    base.update(over)
    return tiny_recipe(**base)


def test_stage_validation() -> None:
    recipe = recipe_from_dict({"stages": STAGES})
    assert recipe.epochs == 3
    assert [s.optimizer.name for s in recipe.stage_list()] == ["adam", "sgd"]
    with pytest.raises(ConfigError, match=r"stages\[0\].binarize"):
        recipe_from_dict({"stages": [{"epochs": 1, "binarize": "all"}]})
    with pytest.raises(ConfigError, match="last stage"):
        recipe_from_dict({"stages": [{"epochs": 1, "binarize": "activations"}]})
    with pytest.raises(ConfigError, match="act_bits is 32"):
        recipe_from_dict({"binarize": {"act_bits": 32},
                          "stages": [{"epochs": 1, "binarize": "activations"},
                                     {"epochs": 1, "binarize": "weights"}]})
    with pytest.raises(ConfigError, match="field 'steps' must be null when there are stages"):
        recipe_from_dict({"stages": STAGES, "steps": 5})


def test_each_stage_binarizes_what_it_says(tiny_data: str, tmp_path: Path) -> None:
    seen: list[tuple[int, bool, bool, str]] = []

    def record(trainer: Trainer) -> None:
        layer = next(m for m in trainer.model.modules() if isinstance(m, IRLayer))
        seen.append((trainer.epoch, layer.weights_on, layer.acts_on,
                     type(trainer.optimizer).__name__))

    fit(make_model(), tiny_data, staged(), tmp_path / "r", quiet=True, on_step=record)
    by_epoch = {e: (w, a, opt) for e, w, a, opt in seen}
    assert by_epoch[0] == (False, True, "Adam")
    assert by_epoch[1] == (True, True, "SGD") and by_epoch[2] == (True, True, "SGD")
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["acts", "final", "final"]
    assert [r["binarize"] for r in rows] == ["activations", "both", "both"]
    # one EDE schedule over all three binarizing epochs: t grows through the stages
    ts = [r["t"] for r in rows]
    assert ts == sorted(ts) and ts[0] < 0.5 and ts[-1] > 5.0
    # the final model binarizes both and has data-initialised thresholds
    model = make_model()
    ckpt = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert ckpt["stage"] == 1 and ckpt["thresholds_set"]
    assert any(k.endswith("act_threshold") for k in ckpt["model"])
    del model


@pytest.mark.parametrize("stop_at", [6, 8])  # 6 steps/epoch: at the stage boundary, inside
def test_resume_is_exact_across_stages(tiny_data: str, tmp_path: Path, stop_at: int) -> None:
    recipe = staged()
    fit(make_model(), tiny_data, recipe, tmp_path / "full", quiet=True)

    def stop(trainer: Trainer) -> None:
        trainer.stop_requested = trainer.global_step == stop_at

    with pytest.raises(TrainingInterrupted):
        fit(make_model(), tiny_data, recipe, tmp_path / "cut", quiet=True, on_step=stop)
    fit(make_model(), tiny_data, recipe, tmp_path / "cut", quiet=True, resume=True)
    _assert_same(_weights(tmp_path / "full"), _weights(tmp_path / "cut"))
    full = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    cut = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["val_top1"] for x in full] == [json.loads(x)["val_top1"] for x in cut]


def test_plain_recipe_unchanged_by_stage_machinery(tiny_data: str, tmp_path: Path) -> None:
    result = fit(make_model(), tiny_data, tiny_recipe(epochs=2), tmp_path / "r", quiet=True)
    assert [r["stage"] for r in result.history] == ["1", "1"]
    assert result.history[0]["t"] == pytest.approx(0.1)
    assert result.history[1]["t"] == pytest.approx(1.0)


def test_non_finite_loss_stops_with_one_line(tiny_data: str, tmp_path: Path) -> None:
    from irconvert.train.outcome import TrainingDiverged

    def poison(trainer: Trainer) -> None:
        if trainer.global_step == 7:  # inside epoch 2: epoch 1's last.pt must survive
            with torch.no_grad():
                trainer.model.fc.weight.fill_(float("nan"))

    run = tmp_path / "r"
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2.*last good epoch"):
        fit(make_model(), tiny_data, tiny_recipe(epochs=3), run, quiet=True, on_step=poison)
    saved = torch.load(run / "last.pt", weights_only=True)
    assert saved["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_evaluate_start_reports_top1_before_training(tiny_data: str, tmp_path: Path) -> None:
    result = fit(make_model(), tiny_data, staged(), tmp_path / "r", quiet=True,
                 evaluate_start=True)
    assert set(result.start) == {"converted", "calibrated"}
    assert all(0.0 <= v <= 100.0 for v in result.start.values())


def test_nan_reaching_a_sign_is_not_turned_into_a_bit() -> None:
    from irconvert.functional import ede_sign

    x = torch.tensor([1.0, -2.0, 0.0, float("nan"), float("inf")])
    out = ede_sign(x, 1.0, 1.0)
    assert out[:3].tolist() == [1.0, -1.0, 1.0]
    assert torch.isnan(out[3:]).all()  # the loss becomes NaN and the trainer stops
