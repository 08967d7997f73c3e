"""Run an exported model once in a child process, so an engine crash is a message.

An inference engine is native code: a bug in it (OpenVINO's CPU plugin has
crashed on some graph patterns, see
:data:`irconvert.export.openvino_graph.CRASHING_PRODUCERS`) kills the
process with a signal, taking the user's command, its message and any
half-done work with it. Running the model once in a separate interpreter
first turns that into a :class:`~irconvert.errors.ExportError` naming the
file and the signal, while the caller's process, and every file already
written, are untouched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ChildRun", "crash_reason", "predict_isolated", "run_once_isolated"]

# What the child runs: load the file the way users do, predict on the saved
# input, save the outputs.
_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from irconvert.export.runtime import load_predictor
    predict = load_predictor(sys.argv[1], threads=1)
    np.save(sys.argv[3], predict(np.load(sys.argv[2])))
""")


def crash_reason(returncode: int) -> str | None:
    """``"SIGSEGV (signal 11)"`` for a child killed by a signal, else None."""
    if returncode >= 0:
        return None
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "signal"
    return f"{name} (signal {-returncode})"


@dataclass(frozen=True)
class ChildRun:
    """What a child process made of one prediction."""

    outputs: np.ndarray | None  # None unless it exited 0 and saved them
    returncode: int | None  # None: it ran past the timeout
    stderr: str

    @property
    def why(self) -> str:
        """Why there are no outputs, in a few words (``""`` when there are)."""
        if self.outputs is not None:
            return ""
        if self.returncode is None:
            return "timed out"
        tail = (self.stderr.strip().splitlines() or [""])[-1][:200]
        return f"{crash_reason(self.returncode) or f'exit {self.returncode}'}: {tail}"


def predict_isolated(path: str | os.PathLike[str], x: np.ndarray,
                     timeout: float = 600.0) -> ChildRun:
    """Run the exported model at ``path`` on ``x`` in a child process (one thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        given, made = Path(tmp) / "x.npy", Path(tmp) / "y.npy"
        np.save(given, x)
        try:
            done = subprocess.run([sys.executable, "-c", _CHILD, str(Path(path)), str(given),
                                   str(made)], capture_output=True, text=True,
                                  timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return ChildRun(None, None, "")
        ok = done.returncode == 0 and made.is_file()
        return ChildRun(np.load(made) if ok else None, done.returncode, done.stderr)


def run_once_isolated(path: str | os.PathLike[str], input_size: tuple[int, ...],
                      batch: int = 1, timeout: float = 600.0) -> str | None:
    """Run the exported model at ``path`` once, on zeros, in a child process.

    Returns None when the child ran it (or failed with an ordinary Python
    error, which the caller's own run reports better, or was slow), and the
    crash as words (``"SIGSEGV (signal 11)"``) when a signal killed it.
    """
    run = predict_isolated(path, np.zeros((batch, *input_size), np.float32), timeout)
    return None if run.returncode is None else crash_reason(run.returncode)
