"""A process's first step compiles the model: not the epoch's speed; a stop waits for it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from irconvert.train.run import fit
from irconvert.train.signals import stop_signals
from irconvert.train.trainer import Trainer
from tests.train.test_trainer import make_model, tiny_data, tiny_recipe  # noqa: F401


def test_the_compiling_step_is_left_out_of_the_epoch_speed(
        tiny_data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    # The trainer's clock moves only when a step "compiles" (by 1000 s): the
    # epoch's time is then exactly 0 if that step is left out, whatever else
    # runs on the machine.
    import types

    import irconvert.train.trainer as trainer_module

    clock = [0.0]
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(
        perf_counter=lambda: clock[0]))
    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)  # no real compilation
    step = Trainer._step
    compiled = []

    def slow_first(self: Trainer, inputs: Any, targets: Any) -> Any:
        if self.compiling:
            clock[0] += 1000.0  # what compiling costs the first step
            compiled.append(True)
        return step(self, inputs, targets)

    monkeypatch.setattr(Trainer, "_step", slow_first)
    fit(make_model(), tiny_data, tiny_recipe(epochs=1, compile=True), tmp_path / "run",
        quiet=True)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert compiled == [True]  # one compiling step, and it was timed...
    assert row["time"] == 0.0  # ...but not counted in the epoch's time


class FakeTrainer:
    def __init__(self) -> None:
        self.stop_requested = False
        self.stop_signal = 0
        self.compiling = True
        self.lines: list[str] = []
        self.progress = self

    def log(self, line: str) -> None:
        self.lines.append(line)


def test_a_stop_during_the_compiling_step_says_why_it_waits() -> None:
    trainer = FakeTrainer()
    with stop_signals(trainer):  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # the handler runs between bytecodes of this thread
    assert trainer.stop_requested and trainer.stop_signal == signal.SIGTERM
    assert "compiles the model" in trainer.lines[0]
    trainer = FakeTrainer()
    trainer.compiling = False
    with stop_signals(trainer):  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
    assert "compiles" not in trainer.lines[0]
