"""The weight average (recipe ``ema``): its arithmetic, what is saved and exported, exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from irconvert.checkpoint import model_from_checkpoint
from irconvert.config import EMAConfig
from irconvert.config.recipe_file import recipe_from_dict
from irconvert.errors import ConfigError
from irconvert.export.api import export_checkpoint
from irconvert.export.packed import load_packed
from irconvert.train.ema import WeightAverage
from irconvert.train.run import fit
from tests._train_helpers import cut_and_resume, fit_on_one_thread
from tests.train.test_trainer import _assert_same, make_model, tiny_data, tiny_recipe  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
EMA_RECIPE = {"epochs": 2, "ede": {"t_min": 0.1, "t_max": 10.0, "per": "step"},
              "ema": {"decay": 0.9}}


def test_the_average_is_the_formula() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    plain = WeightAverage(model, EMAConfig(decay=0.9, warmup=False))
    ramped = WeightAverage(model, EMAConfig(decay=0.9, warmup=True))
    with torch.no_grad():
        model[0].weight.fill_(3.0)
        model[1].num_batches_tracked.fill_(7)
    plain.update(model)
    ramped.update(model)  # first update: decay min(0.9, 1/10) = 0.1
    assert torch.allclose(plain.module[0].weight, torch.full((2, 2), 0.9 * 1 + 0.1 * 3))
    assert torch.allclose(ramped.module[0].weight, torch.full((2, 2), 0.1 * 1 + 0.9 * 3))
    assert int(plain.module[1].num_batches_tracked) == 7  # integers are copied
    assert ramped.current_decay() == pytest.approx(2 / 11) and plain.updates == 1
    assert not any(p.requires_grad for p in plain.module.parameters())


def test_the_recipe_field_is_checked() -> None:
    assert recipe_from_dict({"ema": {"decay": 0.99}}).ema == EMAConfig(decay=0.99)
    assert recipe_from_dict({}).ema is None
    with pytest.raises(ConfigError, match=r"ema\.decay"):
        recipe_from_dict({"ema": {"decay": 1.5}})


@pytest.fixture(scope="module")
def ema_run(tiny_data: str, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("ema") / "run"
    fit_on_one_thread(make_model(), tiny_data, tiny_recipe(**EMA_RECIPE), out, quiet=True)
    return out


def test_the_average_is_what_is_saved(ema_run: Path) -> None:
    ckpt = torch.load(ema_run / "last.pt", weights_only=True)
    assert ckpt["ema"]["updates"] == 12  # 2 epochs of 6 steps
    trained, averaged = ckpt["train_model"], ckpt["model"]
    assert trained.keys() == averaged.keys()
    assert any(not torch.equal(trained[k], averaged[k]) for k in trained)
    best = torch.load(ema_run / "best.pt", weights_only=True)
    assert "train_model" in best  # best.pt is a run checkpoint too


def test_the_average_is_what_export_writes(tiny_data: str, tmp_path: Path) -> None:  # noqa: F811
    from irconvert.models import build_model

    torch.manual_seed(0)
    fit(build_model("cifar_resnet20", num_classes=4), tiny_data,
        tiny_recipe(epochs=1, ema={"decay": 0.5}), tmp_path / "run", quiet=True,
        arch="cifar_resnet20")
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    export_checkpoint(tmp_path / "run" / "last.pt", "packed", tmp_path / "m.irc")
    x = torch.randn(4, 3, 8, 8)
    trained = model_from_checkpoint({**ckpt, "model": ckpt["train_model"]})
    with torch.no_grad():
        exported = load_packed(tmp_path / "m.irc")(x)
        averaged = model_from_checkpoint(ckpt)(x)
        raw = trained(x)
    assert torch.equal(exported, averaged)
    assert not torch.equal(exported, raw)


def test_resume_with_the_average_is_exact(tiny_data: str, ema_run: Path,  # noqa: F811
                                          tmp_path: Path) -> None:
    recipe = tiny_recipe(**EMA_RECIPE)

    cut_and_resume(make_model, tiny_data, recipe, tmp_path / "cut", at_step=4)
    full = torch.load(ema_run / "last.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    _assert_same(full["model"], cut["model"])
    _assert_same(full["train_model"], cut["train_model"])
    assert full["ema"] == cut["ema"]


def test_the_trained_weights_are_evaluated_beside_the_average(
        tiny_data: str, ema_run: Path, tmp_path: Path) -> None:  # noqa: F811
    import json

    from irconvert.evaluate import evaluate_any
    from irconvert.models import build_model

    rows = [json.loads(line) for line in (ema_run / "metrics.jsonl").read_text().splitlines()]
    assert all(isinstance(r["raw_val_top1"], float) for r in rows if r["val_top1"] is not None)
    # each score is its own weights' score: the average's and the trained weights'
    torch.manual_seed(0)
    out = tmp_path / "run"
    fit(build_model("cifar_resnet20", num_classes=4), tiny_data,
        tiny_recipe(epochs=1, ema={"decay": 0.5}), out, quiet=True, arch="cifar_resnet20")
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    ckpt = torch.load(out / "last.pt", weights_only=True)
    torch.save({**ckpt, "model": ckpt["train_model"]}, tmp_path / "trained.pt")
    assert evaluate_any(str(out / "last.pt"), tiny_data)["top1"] == last["val_top1"]
    assert evaluate_any(str(tmp_path / "trained.pt"), tiny_data)["top1"] == last["raw_val_top1"]
    assert last["raw_val_top1"] != last["val_top1"]  # else the check above tells nothing
    plain = tmp_path / "plain"
    fit_on_one_thread(make_model(), tiny_data, tiny_recipe(epochs=1), plain, quiet=True)
    assert "raw_val_top1" not in json.loads((plain / "metrics.jsonl").read_text())
