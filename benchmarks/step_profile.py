#!/usr/bin/env python3
"""Where a real training step's time goes: the trainer, a recipe, real data.

Runs ``irconvert binarize`` (``binarize_and_train``) with a recipe as
shipped, lets it compile and warm up, times ``--steps`` steps (the wall time
from one optimizer step to the next, data loading included), then profiles
``--profile-steps`` more and splits them by the trainer's named phases
(``irconvert/train/phases.py``): the student's forward, the loss (the
teacher's forward inside it, shown apart), backward and the optimizer.
"other" is the profiled step's wall time beyond them: the next batch, the
EDE schedule, metrics. Then it stops the run (nothing is kept)::

    OMP_NUM_THREADS=2 python benchmarks/step_profile.py \\
        --weights ../shared/data/weights/resnet20-12fca82f.th --data ../shared/data/cifar10 \\
        --recipe recipes/cifar10-resnet20-finetune-1w1a.yaml --out results/step-profile-1w1a

``--set KEY=VALUE`` changes a recipe field as ``irconvert binarize --set``
does (``--set distill=null``: no teacher; ``--set binarize.act_bits=32``).
Time it with the cores to itself: the numbers are wall times.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import machine

from irconvert.atomic import write_text
from irconvert.config.recipe_file import apply_overrides, load_recipe, parse_sets
from irconvert.errors import IRConvertError
from irconvert.train.outcome import TrainingInterrupted
from irconvert.train.phases import PHASES, PREFIX
from irconvert.train.run import binarize_and_train


class StepClock:
    """The trainer's ``on_step``: time steps, then profile some, then ask it to stop."""

    def __init__(self, warmup: int, steps: int, profile_steps: int) -> None:
        self.warmup, self.steps, self.profile_steps = warmup, steps, profile_steps
        self.walls: list[float] = []
        self.profiled: list[float] = []
        self.last = time.perf_counter()
        self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])

    def __call__(self, trainer: Any) -> None:
        now = time.perf_counter()
        n = trainer.global_step  # steps done, this one included
        timed_end = self.warmup + self.steps
        if self.warmup < n <= timed_end:
            self.walls.append(now - self.last)
        elif n > timed_end + 1:  # the first profiled step starts the profiler: not counted
            self.profiled.append(now - self.last)
        if n == timed_end + 1:
            self.prof.__enter__()
        if n == timed_end + 1 + self.profile_steps:
            self.prof.__exit__(None, None, None)
            trainer.stop_requested = True
        self.last = time.perf_counter()


def phase_ms(prof: Any, steps: int) -> dict[str, float]:
    """Milliseconds per step in each named phase (CPU wall inside the phase)."""
    totals = {name: 0.0 for name in PHASES}
    for event in prof.key_averages():
        if event.key.startswith(PREFIX) and event.key[len(PREFIX):] in totals:
            totals[event.key[len(PREFIX):]] += event.cpu_time_total / 1e3
    return {name: total / steps for name, total in totals.items()}


def table(result: dict[str, Any]) -> str:
    ph, wall = result["phases_ms"], result["profiled_step_ms"]
    rows = [("student forward", ph["forward"]),
            ("teacher forward (in the loss)", ph["teacher"]),
            ("loss without the teacher", ph["loss"] - ph["teacher"]),
            ("backward", ph["backward"]),
            ("optimizer (and schedule)", ph["optimizer"]),
            ("other: next batch, EDE schedule, metrics",
             wall - ph["forward"] - ph["loss"] - ph["backward"] - ph["optimizer"])]
    lines = ["| part of a step | ms | share |", "|---|---:|---:|"]
    lines += [f"| {name} | {ms:.1f} | {100 * ms / wall:.0f} % |" for name, ms in rows]
    lines.append(f"| **profiled step** | **{wall:.1f}** | 100 % |")
    return "\n".join(lines) + (
        f"\n\nStep without the profiler: {result['step_ms']:.1f} ms median of "
        f"{result['steps']} ({result['images_per_s']:.0f} images/s). "
        f"{result['recipe']}{' ' + ' '.join(result['sets']) if result['sets'] else ''}, "
        f"batch {result['batch_size']}, amp {result['amp']}; {result['machine']}, "
        f"torch {result['torch']}.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="the model, as binarize takes it")
    parser.add_argument("--data", required=True, help="an ImageFolder root (train/, val/)")
    parser.add_argument("--recipe", default="recipes/cifar10-resnet20-finetune-1w1a.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        metavar="KEY=VALUE", help="a recipe field, as binarize --set; repeatable")
    parser.add_argument("--warmup", type=int, default=15, help="steps before timing (compile)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps")
    parser.add_argument("--profile-steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sets: dict[str, Any] = {"budget_minutes": None, "epochs": 1, "eval_every": 1000}
    try:
        sets.update(parse_sets(args.sets))
        recipe = apply_overrides(load_recipe(args.recipe), {}, sets)
    except IRConvertError as exc:
        parser.error(str(exc))
    clock = StepClock(args.warmup, args.steps, args.profile_steps)
    data = args.data if ":" in args.data else f"imagefolder:{args.data}"
    # the clock's stop ends the run; its directory is not kept
    with tempfile.TemporaryDirectory() as run_dir, contextlib.suppress(TrainingInterrupted):
        binarize_and_train(args.weights, data, recipe, Path(run_dir) / "run", quiet=True,
                           on_step=clock, evaluate_fp=False)
    if not clock.profiled:
        print("error: the run ended before the profiled steps (an epoch too short?)",
              file=sys.stderr)
        return 1
    step_ms = 1e3 * statistics.median(clock.walls)
    result = {
        "recipe": args.recipe, "sets": args.sets, "batch_size": recipe.batch_size,
        "amp": recipe.amp, "steps": len(clock.walls), "step_ms": step_ms,
        "images_per_s": recipe.batch_size * 1e3 / step_ms,
        "profiled_steps": len(clock.profiled),
        "profiled_step_ms": 1e3 * statistics.mean(clock.profiled),  # as the phases
        "phases_ms": phase_ms(clock.prof, len(clock.profiled)),
        "machine": machine(), "torch": torch.__version__,
    }
    text = table(result)
    print(text)
    if args.out:
        write_text(args.out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
        write_text(args.out.with_suffix(".md"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
