"""What the trainer's parts share: the attributes of a run and the methods they call.

The trainer is assembled from parts, each in its own module and each a
mixin of :class:`~irconvert.train.trainer.Trainer`: stages, EDE and
calibration (:mod:`irconvert.train.stages`), the time budget
(:mod:`irconvert.train.budget_keeping`) and the run's state on disk
(:mod:`irconvert.train.run_state`). :class:`RunParts` is their common base:
it declares every attribute a part reads or writes (``Trainer.__init__``
sets them all) and the methods one part calls on another, so the type
checker holds each part to this contract instead of to the whole trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from irconvert.config import StageConfig, TrainConfig
from irconvert.convert import ConversionReport
from irconvert.data.datasets import DataBundle
from irconvert.train.distributed import DistEnv
from irconvert.train.ema import WeightAverage
from irconvert.train.evaluate import EvalResult
from irconvert.train.progress import Progress

__all__ = ["RunParts"]


class RunParts:
    """The run's attributes and the cross-part methods (see the module docstring)."""

    # where the run comes from and goes
    recipe: TrainConfig
    data: DataBundle
    out_dir: Path
    arch: str | None
    source: dict[str, Any]
    run_info: dict[str, Any]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: list[int] | None  # [C, H, W] of an evaluation input, recorded for exports
    # where and how it computes
    device: torch.device
    env: DistEnv
    progress: Progress
    use_amp: str
    channels_last: bool
    # the models, the loss and the optimizer
    model: nn.Module
    forward_model: nn.Module
    teacher: nn.Module | None
    teacher_fn: Any
    init_info: dict[str, Any] | None  # what ``init`` copied at the run's start
    teacher_ids: list[dict[str, Any]]  # distill.teacher's sources and digests ([]: the model)
    report: ConversionReport
    distill: nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    train_loader: Any
    val_loader: Any
    # the plan: stages and length
    stages: tuple[StageConfig, ...]
    stage_starts: list[int]
    stage_index: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    # where the run is
    epoch: int
    step_in_epoch: int
    global_step: int
    best_top1: float
    fp_result: EvalResult | None
    history: list[dict[str, Any]]
    skipped: list[str]
    _partial: list[float]
    _thresholds_set: bool
    ema: WeightAverage | None  # the weight average that is evaluated and saved
    # the time budget
    clock0: float
    elapsed_before: float
    budget_pending: bool
    budget_decision: dict[str, Any] | None
    _epoch_secs: list[tuple[float, int]]
    _eval_secs: list[float]

    # -- methods one part calls on another (each defined by exactly one of them) --
    def _set_epoch(self, epoch: int, skip_batches: int) -> None:
        raise NotImplementedError  # Trainer

    def _step(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError  # Trainer

    def stage_of(self, epoch: int) -> int:
        raise NotImplementedError  # stages

    def _stage_steps(self, i: int) -> int:
        raise NotImplementedError  # stages

    def _enter_stage(self, i: int, *, fresh: bool, transition: bool) -> None:
        raise NotImplementedError  # stages

    def _update_ede(self) -> tuple[float, float]:
        raise NotImplementedError  # stages

    def elapsed_s(self) -> float:
        raise NotImplementedError  # budget_keeping

    def _apply_budget(self, decided: dict[str, Any], *, mid_run: bool = False) -> None:
        raise NotImplementedError  # budget_keeping
