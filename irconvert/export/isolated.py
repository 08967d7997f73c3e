"""Run an exported model once in a child process, so an engine crash is a message.

An inference engine is native code: a bug in it (OpenVINO's CPU plugin has
crashed on some graph patterns, see
:data:`irconvert.export.openvino_export.CRASHING_PRODUCERS`) kills the
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
import textwrap
from pathlib import Path

__all__ = ["crash_reason", "run_once_isolated"]

# What the child runs: load the file the way users do, one batch of zeros.
_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from irconvert.export.runtime import load_predictor
    predict = load_predictor(sys.argv[1], threads=1)
    size = tuple(int(v) for v in sys.argv[2].split(","))
    predict(np.zeros((int(sys.argv[3]), *size), np.float32))
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


def run_once_isolated(path: str | os.PathLike[str], input_size: tuple[int, ...],
                      batch: int = 1, timeout: float = 600.0) -> str | None:
    """Run the exported model at ``path`` once in a child process.

    Returns None when the child ran it (or failed with an ordinary Python
    error, which the caller's own run reports better), and the crash as
    words (``"SIGSEGV (signal 11)"``) when a signal killed it.
    """
    size = ",".join(str(v) for v in input_size)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD, str(Path(path)), size, str(batch)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None  # slow is not a crash
    return crash_reason(done.returncode)
