"""What a training run ends with: its result, or why it stopped."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irconvert.errors import IRConvertError

__all__ = ["FitResult", "TrainingDiverged", "TrainingInterrupted"]


class TrainingInterrupted(IRConvertError):
    """Training stopped on request (Ctrl-C, SIGTERM); ``last.pt`` was saved.

    ``exit_code`` is the shell's convention for the signal: 130 for Ctrl-C
    (SIGINT), 143 for SIGTERM.
    """

    exit_code = 128 + signal.SIGINT


class TrainingDiverged(IRConvertError):
    """The loss became NaN or infinite; ``last.pt`` holds the last good epoch."""


@dataclass
class FitResult:
    """What a finished run reports."""

    run_dir: Path
    fp_top1: float | None
    fp_top5: float | None
    best_top1: float
    final: dict[str, Any]
    report: dict[str, Any]
    wall_time: float
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    # top-1 before any training: right after conversion, then after the
    # threshold / BatchNorm calibration (only when asked: two evaluations)
    start: dict[str, float] = field(default_factory=dict)
    # image files found unreadable and left out (data.bad_files: skip)
    skipped: list[str] = field(default_factory=list)
    # the recipe's epochs when a time budget lowered them (else None)
    epochs_ceiling: int | None = None
    # the precision of the run's evaluations: bf16 ones differ from what
    # ``irconvert eval`` and the exports (fp32) give by a few tenths
    amp: str = "none"
