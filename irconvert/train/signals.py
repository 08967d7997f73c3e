"""Ctrl-C and SIGTERM during training: finish the step, save ``last.pt``, stop."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any, Protocol

from irconvert.train.progress import Progress

__all__ = ["Stoppable", "stop_signals"]


class Stoppable(Protocol):
    """What :func:`stop_signals` needs of a trainer: the flag its loop checks."""

    stop_requested: bool
    stop_signal: int
    progress: Progress
    compiling: bool  # the current step is the first one, which compiles the model


@contextlib.contextmanager
def stop_signals(trainer: Stoppable) -> Iterator[None]:
    """SIGINT/SIGTERM set a flag the loop checks; a second Ctrl-C aborts at once."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        trainer.stop_signal = signum
        wait = (" (this first step compiles the model, which can take a minute)"
                if trainer.compiling else "")
        trainer.progress.log(f"{signal.Signals(signum).name} received: saving last.pt and "
                             f"stopping after this step{wait} (Ctrl-C again to abort)")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
