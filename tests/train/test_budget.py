"""Time budgets: the arithmetic, and a budgeted run that is the run of the epochs it kept."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from irconvert.train import budget as budget_module
from irconvert.train.budget import epoch_seconds, fit_epochs, scale_stages
from irconvert.train.outcome import TrainingInterrupted
from irconvert.train.progress import PlainProgress
from irconvert.train.run import fit
from irconvert.train.trainer import Trainer
from tests.train.test_stages import STAGES
from tests.train.test_trainer import _assert_same, _weights, make_model, tiny_data, tiny_recipe

__all__ = ["tiny_data"]  # the module-scoped fixture


def test_fit_epochs_keeps_what_fits_with_the_margin_and_the_evaluations() -> None:
    # 150 s spent; 3,450 s left, 5% held back: 3,427.5 s usable. E epochs cost
    # 110 E + 10 per evaluation (every 3rd epoch and the last): 28 -> 3,330 s,
    # 29 -> 3,440 s.
    fit = fit_epochs(budget_s=3600, elapsed_s=150, done=0, ceiling=80, epoch_s=110,
                     eval_s=10, eval_every=3)
    assert (fit.epochs, fit.ceiling, fit.projected_s) == (28, 80, 3330)
    assert "28 of 80 epochs fit" in fit.describe(60)


def test_fit_epochs_bounds() -> None:
    roomy = fit_epochs(budget_s=1e6, elapsed_s=0, done=0, ceiling=30, epoch_s=1, eval_s=1,
                       eval_every=1)
    assert roomy.epochs == 30 and "all 30 epochs fit" in roomy.describe(1e4)
    spent = fit_epochs(budget_s=60, elapsed_s=100, done=0, ceiling=30, epoch_s=1, eval_s=1,
                       eval_every=1, minimum=2)
    assert spent.epochs == 2  # a run has at least one epoch per stage


def test_epoch_seconds_leaves_out_compilation() -> None:
    # 6 batches in 10 s; the first two (5 s, 2 s) exceed the steady 1 s by 5 s
    assert epoch_seconds(10.0, [5.0, 2.0, 1.0, 1.0, 1.0, 1.0], 60) == pytest.approx(50.0)
    assert epoch_seconds(0.0, [], 60) == 0.0


@pytest.mark.parametrize(("lengths", "total", "done", "expected"), [
    ([10, 20], 15, 0, [5, 10]),
    ([1, 29], 10, 0, [1, 9]),  # every stage keeps an epoch
    ([3, 3, 3], 4, 0, [2, 1, 1]),  # the largest remainder takes the rounding
    ([5, 5], 30, 0, [5, 5]),  # a budget never lengthens a run
    ([2, 2, 2], 1, 3, [2, 1, 1]),  # what has run stays
])
def test_scale_stages(lengths: list[int], total: int, done: int, expected: list[int]) -> None:
    assert scale_stages(lengths, total, done) == expected


pytestmark = pytest.mark.usefixtures("one_thread")


def _fake_probe(loop_s: float, step_s: list[float], batches: int) -> float:
    return 60.0 if batches == 6 else 0.0  # 48 images / batch 8: 6 steps per epoch


@pytest.fixture
def slow_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe times every training epoch at 60 s, every evaluation at 0 s;
    the check after each epoch (which would see the real, tiny epochs) is off."""
    monkeypatch.setattr(budget_module, "epoch_seconds", _fake_probe)
    monkeypatch.setattr(Trainer, "_keep_to_budget", lambda self: None)


def _rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_budgeted_run_is_the_run_of_the_epochs_it_keeps(
        tiny_data: str, tmp_path: Path, slow_epochs: None) -> None:
    # 3.5 min at 60 s an epoch, with the 5% margin: 3 of the recipe's 10 epochs
    log = io.StringIO()
    result = fit(make_model(), tiny_data, tiny_recipe(epochs=10, budget_minutes=3.5),
                 tmp_path / "budget", progress=PlainProgress(log))
    assert "time budget 3.5 min: 3 of 10 epochs fit" in log.getvalue()
    assert (result.epochs, result.epochs_ceiling) == (3, 10)
    assert [r["epoch"] for r in _rows(tmp_path / "budget")] == [0, 1, 2]
    ckpt = torch.load(tmp_path / "budget" / "last.pt", weights_only=True)
    decision = ckpt["budget"]
    assert (decision["epochs"], decision["ceiling"], decision["stages"]) == (3, 10, [10])
    assert decision["changes"] == []
    # the timing probe left no trace: weights, statistics, schedule, random state
    fit(make_model(), tiny_data, tiny_recipe(epochs=3), tmp_path / "plain", quiet=True)
    _assert_same(_weights(tmp_path / "plain"), _weights(tmp_path / "budget"))
    assert ([r["lr"] for r in _rows(tmp_path / "plain")]
            == [r["lr"] for r in _rows(tmp_path / "budget")])


def test_resume_keeps_the_decision(tiny_data: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch, slow_epochs: None) -> None:
    recipe = tiny_recipe(epochs=10, budget_minutes=3.5)
    fit(make_model(), tiny_data, recipe, tmp_path / "full", quiet=True)

    def stop(trainer: Trainer) -> None:
        trainer.stop_requested = trainer.global_step == 8

    with pytest.raises(TrainingInterrupted):
        fit(make_model(), tiny_data, recipe, tmp_path / "cut", quiet=True, on_step=stop)
    # a machine ten times slower when resuming changes nothing: no new decision
    monkeypatch.setattr(budget_module, "epoch_seconds", lambda *a: 600.0)
    fit(make_model(), tiny_data, recipe, tmp_path / "cut", quiet=True, resume=True)
    _assert_same(_weights(tmp_path / "full"), _weights(tmp_path / "cut"))
    assert len(_rows(tmp_path / "cut")) == 3


def test_a_budget_scales_every_stage(tiny_data: str, tmp_path: Path, slow_epochs: None) -> None:
    # stages of 1 + 2 epochs, 3.5 min for 60-s epochs... with a ceiling of 3
    # all fit; at 2.5 min two do, one per stage
    recipe = tiny_recipe(stages=STAGES, binarize={"act_bits": 1}, budget_minutes=2.5)
    result = fit(make_model(), tiny_data, recipe, tmp_path / "r", quiet=True)
    assert result.epochs == 2
    assert [r["stage"] for r in _rows(tmp_path / "r")] == ["acts", "final"]


def test_a_run_slower_than_timed_is_shortened_to_end_in_time(
        tiny_data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # timed at 0.1 s an epoch, all 10 fit in 6 s; the real epochs take over
    # 1.2 s (0.2 s a step), so after the first the run is cut to about 3
    monkeypatch.setattr(budget_module, "epoch_seconds", lambda *a: 0.1)
    log = io.StringIO()
    result = fit(make_model(), tiny_data, tiny_recipe(epochs=10, budget_minutes=0.1),
                 tmp_path / "r", progress=PlainProgress(log),
                 on_step=lambda trainer: time.sleep(0.2))
    assert "all 10 epochs fit" in log.getvalue()
    assert "10 -> " in log.getvalue() and "the schedules shortened from epoch 2" in log.getvalue()
    assert 2 <= result.epochs < 10
    rows = _rows(tmp_path / "r")
    assert len(rows) == result.epochs and rows[-1]["val_top1"] is not None
    changes = torch.load(tmp_path / "r" / "last.pt", weights_only=True)["budget"]["changes"]
    assert changes[0]["after_epoch"] == 1 and changes[-1]["epochs"] == result.epochs


def test_a_run_faster_than_timed_is_lengthened_early(
        tiny_data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # timed at 60 s an epoch, 3 of 10 fit; the first real epoch takes well
    # under a second, so the run takes all 10
    monkeypatch.setattr(budget_module, "epoch_seconds", _fake_probe)
    log = io.StringIO()
    result = fit(make_model(), tiny_data, tiny_recipe(epochs=10, budget_minutes=3.5),
                 tmp_path / "r", progress=PlainProgress(log))
    assert "3 of 10 epochs fit" in log.getvalue()
    assert "3 -> 10 epochs, the schedules lengthened from epoch 2" in log.getvalue()
    assert result.epochs == 10 and result.epochs_ceiling is None


def test_the_check_after_an_epoch_counts_its_evaluation_still_to_come() -> None:
    # 10 min; 5 epochs decided; 2 done at 100 s each, 200 s on the clock, and
    # epoch 2 still owes its evaluation (every 2nd, 50 s). Without it the run
    # would end at 200 + 3 x 100 + 2 x 50 = 600 s, just in time; with it at
    # 650 s, so it keeps 4: 250 + 200 + 50 = 500 <= 250 + 0.95 x 350.
    applied: list[dict[str, Any]] = []
    trainer = SimpleNamespace(
        budget_decision={"epochs": 5, "ceiling": 400, "stages": [5], "epoch_s": 100.0,
                         "eval_s": 50.0, "changes": []},
        recipe=SimpleNamespace(budget_minutes=10.0, eval_every=2),
        _epoch_secs=[(100.0, 10), (100.0, 10)], steps_per_epoch=10, _eval_secs=[],
        epoch=1, epochs=5, elapsed_s=lambda: 200.0, stages=[SimpleNamespace(epochs=5)],
        env=SimpleNamespace(distributed=False), progress=SimpleNamespace(log=lambda line: None),
        _apply_budget=lambda decided, mid_run: applied.append(decided))
    Trainer._keep_to_budget(trainer)  # type: ignore[arg-type]
    assert [d["epochs"] for d in applied] == [4]
    assert applied[0]["changes"] == [{"after_epoch": 2, "epochs": 4}]
