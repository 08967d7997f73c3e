"""The trainer's named phases: what ``benchmarks/step_profile.py`` splits a step by."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from irconvert.train.outcome import TrainingInterrupted
from irconvert.train.phases import PHASES, PREFIX, phase
from irconvert.train.run import fit
from tests._train_helpers import make_imagefolder
from tests.train.test_trainer import make_model, tiny_recipe


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"imagefolder:{make_imagefolder(tmp_path_factory.mktemp('data') / 'tiny')}"


def _profiled_phases(data: str, out: Path, **recipe: Any) -> list[Any]:
    """Profile steps 2 and 3 of a tiny run; the phase events they recorded."""
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])

    def on_step(trainer: Any) -> None:
        if trainer.global_step == 1:
            prof.__enter__()
        elif trainer.global_step == 3:
            prof.__exit__(None, None, None)
            trainer.stop_requested = True

    with pytest.raises(TrainingInterrupted):
        fit(make_model(), data, tiny_recipe(epochs=2, **recipe), out, quiet=True,
            on_step=on_step, evaluate_fp=False)
    return [e for e in prof.events() if e.name.startswith(PREFIX)]


def _within(inner: Any, outer: Any) -> bool:
    return (outer.time_range.start <= inner.time_range.start
            and inner.time_range.end <= outer.time_range.end)


def test_each_step_records_every_phase_once_with_the_teacher_inside_the_loss(
        tiny_data: str, tmp_path: Path) -> None:
    events = _profiled_phases(tiny_data, tmp_path / "r", distill={"alpha": 0.5})
    counts = {name: sum(e.name == PREFIX + name for e in events) for name in PHASES}
    assert counts == dict.fromkeys(PHASES, 2)
    losses = [e for e in events if e.name == PREFIX + "loss"]
    for teacher in (e for e in events if e.name == PREFIX + "teacher"):
        assert any(_within(teacher, loss) for loss in losses)
    # a step's phases run in order and do not overlap
    first = sorted((e for e in events if e.name != PREFIX + "teacher"),
                   key=lambda e: e.time_range.start)[:4]
    assert [e.name[len(PREFIX):] for e in first] == ["forward", "loss", "backward", "optimizer"]
    for a, b in itertools.pairwise(first):
        assert a.time_range.end <= b.time_range.start


def test_without_distillation_there_is_no_teacher_phase(tiny_data: str, tmp_path: Path) -> None:
    names = {e.name for e in _profiled_phases(tiny_data, tmp_path / "r")}
    assert names == {PREFIX + n for n in PHASES if n != "teacher"}


def test_an_unknown_phase_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown phase 'data'"):
        phase("data")
