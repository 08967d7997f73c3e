"""Named phases of a training step, visible to ``torch.profiler``.

``benchmarks/step_profile.py`` profiles the real trainer and splits a step
by these names (the student's forward, the teacher's, the loss, backward,
optimizer); whatever the step's wall time has beyond them is data and
bookkeeping. Outside a profiler a phase costs a few microseconds.
"""

from __future__ import annotations

from typing import Final

from torch.profiler import record_function

__all__ = ["PHASES", "phase"]

PREFIX: Final = "irconvert::"
# In the order a step runs them; "teacher" runs inside "loss".
PHASES: Final = ("forward", "loss", "teacher", "backward", "optimizer")


def phase(name: str) -> record_function:
    """A ``with`` block that the profiler records as ``irconvert::<name>``."""
    if name not in PHASES:
        raise ValueError(f"unknown phase {name!r}; one of {', '.join(PHASES)}")
    return record_function(PREFIX + name)
