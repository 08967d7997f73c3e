"""Fit a run's epochs to a wall-clock budget (recipe field ``budget_minutes``).

A recipe measured on one machine says "80 epochs in 128 minutes"; on a CPU
three times slower the same 80 epochs take six hours. With a budget, the
recipe's ``epochs`` is a ceiling: before the first step the trainer times a
few training steps and evaluation batches (and undoes them), then keeps as
many epochs as fit, and the learning-rate and EDE schedules span that
length. Short runs gain most from the schedules' tails (low learning rate,
EDE's ``t`` near ``t_max``), so a shorter schedule beats the long one cut
off when time runs out.

A shared host's speed drifts by tens of percent from one minute to the
next, so the trainer fits again after every epoch, from the epochs so far:
both ways in the first fifth of a one-stage run (the schedules have barely
moved), later only shorter, and only when the run would end past its
budget. Decisions are saved in ``last.pt`` and reused by ``--resume``. A
run never re-fitted is exactly the one ``--epochs N`` gives with the N
decided.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["PROBE_EVAL_BATCHES", "PROBE_STEPS", "BudgetFit", "epoch_seconds", "fit_epochs",
           "projected_seconds", "scale_stages", "timed_batches"]

# Steps and evaluation batches timed before the first epoch: enough for a
# steady median after compilation, seconds to a minute of the budget.
PROBE_STEPS = 32
PROBE_EVAL_BATCHES = 8

# Share of the remaining time held back: a host's speed drifts by a few
# percent within a run (other tenants, clocks), and overrunning a budget is
# worse for the user than one epoch fewer.
MARGIN = 0.05
# Steps at the start of a probe that may include torch.compile's tracing and
# autotuning; their excess over a steady step is not an epoch cost.
WARMUP_STEPS = 2


@dataclass(frozen=True)
class BudgetFit:
    """What :func:`fit_epochs` decided, and the estimates it used."""

    epochs: int
    ceiling: int
    epoch_s: float
    eval_s: float
    projected_s: float

    def describe(self, budget_min: float) -> str:
        """One log line."""
        what = (f"all {self.ceiling} epochs fit" if self.epochs >= self.ceiling
                else f"{self.epochs} of {self.ceiling} epochs fit")
        return (f"time budget {budget_min:g} min: {what} (an epoch takes {self.epoch_s:.0f} s "
                f"and an evaluation {self.eval_s:.0f} s here; about "
                f"{self.projected_s / 60:.0f} min in all)")


def timed_batches(loader: Iterable[Any], n: int,
                  fn: Callable[[Any, Any], Any]) -> tuple[float, list[float]]:
    """Run ``fn(inputs, targets)`` on the first ``n`` batches of ``loader``.

    Returns the loop's wall time (loading included) and each call's time.
    """
    times: list[float] = []
    start = time.perf_counter()
    for i, (inputs, targets) in enumerate(loader):
        if i >= n:
            break
        t0 = time.perf_counter()
        fn(inputs, targets)
        times.append(time.perf_counter() - t0)
    return time.perf_counter() - start, times


def epoch_seconds(loop_s: float, step_s: list[float], batches: int) -> float:
    """A steady pass over ``batches`` batches, from a timed loop over a few.

    ``loop_s`` is the wall time of a loop over ``len(step_s)`` batches
    (data loading included); ``step_s`` each batch's own time. The first
    batches' excess over the median later one is compilation, paid once.
    """
    if not step_s:
        return 0.0
    steady = statistics.median(step_s[WARMUP_STEPS:] or step_s)
    excess = sum(max(s - steady, 0.0) for s in step_s[:WARMUP_STEPS])
    per_batch = max(loop_s - excess, 0.0) / len(step_s)
    return per_batch * batches


def projected_seconds(*, elapsed_s: float, done: int, epochs: int, epoch_s: float,
                      eval_s: float, eval_every: int) -> float:
    """When a run of ``epochs`` epochs ends, ``done`` of them finished now.

    Every further epoch costs ``epoch_s``, every evaluation (each
    ``eval_every``-th epoch and always the last) ``eval_s``.
    """
    more = max(epochs - done, 0)
    evals = sum(1 for e in range(done + 1, epochs + 1) if e % eval_every == 0)
    if more and epochs % eval_every:
        evals += 1
    return elapsed_s + more * epoch_s + evals * eval_s


def fit_epochs(*, budget_s: float, elapsed_s: float, done: int, ceiling: int, epoch_s: float,
               eval_s: float, eval_every: int, minimum: int = 1) -> BudgetFit:
    """How many epochs in all (``done`` of them finished) fit in ``budget_s``.

    ``MARGIN`` of the remaining time is held back. The answer lies in
    ``[max(done, minimum), ceiling]``: a budget already spent ends the run
    after what is done.
    """
    floor = min(max(done, minimum), ceiling)
    usable = elapsed_s + (budget_s - elapsed_s) * (1.0 - MARGIN)

    def projected(epochs: int) -> float:
        return projected_seconds(elapsed_s=elapsed_s, done=done, epochs=epochs,
                                 epoch_s=epoch_s, eval_s=eval_s, eval_every=eval_every)

    epochs = floor
    while epochs < ceiling and projected(epochs + 1) <= usable:
        epochs += 1
    return BudgetFit(epochs=epochs, ceiling=ceiling, epoch_s=epoch_s, eval_s=eval_s,
                     projected_s=projected(epochs))


def scale_stages(lengths: list[int], total: int, done: int) -> list[int]:
    """Stage lengths scaled to sum to ``total``, in proportion, each at least 1.

    Epochs already ``done`` stay where they were: a stage cannot shrink below
    the part of it that has run. Largest remainders take the rounding.
    """
    if total >= sum(lengths):
        return list(lengths)
    floor = _ran_floor(lengths, done)
    total = max(total, sum(floor))
    raw = [n * total / sum(lengths) for n in lengths]
    out = [max(int(r), f) for r, f in zip(raw, floor, strict=True)]
    by_remainder = sorted(range(len(out)), key=lambda i: raw[i] - int(raw[i]), reverse=True)
    for i in by_remainder[:max(total - sum(out), 0)]:
        out[i] += 1
    while sum(out) > total:  # floors pushed it over: take from the most over-served
        i = max((j for j in range(len(out)) if out[j] > floor[j]), key=lambda j: out[j] - raw[j])
        out[i] -= 1
    return out


def _ran_floor(lengths: list[int], done: int) -> list[int]:
    """Each stage's minimum: 1, or the epochs of it already run."""
    floor, start = [], 0
    for n in lengths:
        floor.append(max(1, min(max(done - start, 0), n)))
        start += n
    return floor
