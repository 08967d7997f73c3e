"""Progress display: rich bars, plain log lines (``--quiet``), or nothing (rank > 0)."""

from __future__ import annotations

import sys
from typing import Any, Protocol

__all__ = ["NullProgress", "PlainProgress", "Progress", "RichProgress", "make_progress"]


class Progress(Protocol):
    def start(self, epochs: int, first_epoch: int) -> None: ...
    def set_total(self, epochs: int) -> None: ...
    def epoch_start(self, epoch: int, steps: int, done: int) -> None: ...
    def step(self, loss: float, acc: float, images_per_s: float) -> None: ...
    def epoch_end(self, row: dict[str, Any]) -> None: ...
    def log(self, message: str) -> None: ...
    def stop(self) -> None: ...


class NullProgress:
    """For ranks other than 0."""

    def start(self, epochs: int, first_epoch: int) -> None:
        pass

    def set_total(self, epochs: int) -> None:
        """The run's length changed (a time budget decided it)."""

    def epoch_start(self, epoch: int, steps: int, done: int) -> None:
        pass

    def step(self, loss: float, acc: float, images_per_s: float) -> None:
        pass

    def epoch_end(self, row: dict[str, Any]) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    val = (f" val_loss {row['val_loss']:.4f} val_top1 {row['val_top1']:.2f} "
           f"val_top5 {row['val_top5']:.2f}" if row.get("val_top1") is not None else "")
    # staged recipes name their stages; a plain recipe's single stage is "1"
    stage = (f"[{row['stage']}: {row.get('binarize', '')}] "
             if row.get("stage") not in (None, "1") else "")
    return (f"epoch {row['epoch'] + 1}/{epochs} {stage}loss {row['train_loss']:.4f} "
            f"top1 {row['train_top1']:.2f}{val} lr {row['lr']:.4g} t {row['t']:.4g} "
            f"k {row['k']:.4g} {row['images_per_s']:.0f} img/s {row['time']:.1f}s")


class PlainProgress(NullProgress):
    """One line per epoch; for logs and ``--quiet``."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self.epochs = 0

    def start(self, epochs: int, first_epoch: int) -> None:
        self.epochs = epochs

    def set_total(self, epochs: int) -> None:
        self.epochs = epochs

    def epoch_end(self, row: dict[str, Any]) -> None:
        self.log(_epoch_line(row, self.epochs))

    def log(self, message: str) -> None:
        print(message, file=self.stream, flush=True)


class RichProgress(PlainProgress):
    """An epoch bar and a step bar with loss, accuracy, images/s and ETA."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        super().__init__()
        self.console = console or Console()
        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.epoch_task: Any = None
        self.step_task: Any = None

    def start(self, epochs: int, first_epoch: int) -> None:
        self.epochs = epochs
        self.bars.start()
        self.epoch_task = self.bars.add_task("epochs", total=epochs, completed=first_epoch,
                                             info="")

    def set_total(self, epochs: int) -> None:
        self.epochs = epochs
        if self.epoch_task is not None:
            self.bars.update(self.epoch_task, total=epochs)

    def epoch_start(self, epoch: int, steps: int, done: int) -> None:
        if self.step_task is not None:
            self.bars.remove_task(self.step_task)
        self.step_task = self.bars.add_task(f"epoch {epoch + 1}", total=steps, completed=done,
                                            info="")

    def step(self, loss: float, acc: float, images_per_s: float) -> None:
        self.bars.update(self.step_task, advance=1,
                         info=f"loss {loss:.3f} acc {acc:.1f}% {images_per_s:.0f} img/s")

    def epoch_end(self, row: dict[str, Any]) -> None:
        info = (f"val top-1 {row['val_top1']:.2f}%" if row.get("val_top1") is not None
                else f"train top-1 {row['train_top1']:.2f}%")
        self.bars.update(self.epoch_task, advance=1, info=info)
        # soft_wrap: a log line stays one line in a pipe or file (rich would
        # otherwise wrap it at 80 columns there, between a field and its value).
        self.bars.console.print(_epoch_line(row, self.epochs), highlight=False, soft_wrap=True)

    def log(self, message: str) -> None:
        self.bars.console.print(message, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        self.bars.stop()


def make_progress(*, quiet: bool, is_main: bool = True) -> Progress:
    if not is_main:
        return NullProgress()
    return PlainProgress() if quiet else RichProgress()
