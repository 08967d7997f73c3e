#!/usr/bin/env python3
"""Test top-1 against epochs and training minutes, for runs of one recipe at several lengths.

Reads the ``metrics.jsonl`` of each run (a run continued in legs with
``--resume`` has one file for all its legs) and writes ``OUT.md`` (every
evaluation of every run; then each run's last evaluation with its length,
its minutes and the gain per doubling of the epochs from the run before)
and ``OUT.png`` (top-1 against epoch, and each finished run's final top-1
against its length on a log axis: a curve that flattens is a line that
levels off). A run counts as finished when its learning rate has decayed to
under 1/1000 of its peak (the recipes' cosine schedule ends at 0).

    python benchmarks/long_run_curve.py \\
        results/cifar10-r20-1w1a-60ep.jsonl results/cifar10-r20-1w1a-onesitting.jsonl \\
        results/long-run/cifar10-r20-1w1a-160ep/metrics.jsonl \\
        --names 60 80 160 --out results/long-run/curve

Minutes come two ways. "Training minutes" add up the epochs' training-loop
times (``time`` in each row: evaluations and start-up left out) as the
machine ran them, so legs that shared their cores with other work, or were
stopped with SIGSTOP mid-epoch, count that time too. "Minutes at the median
epoch" are the epochs times the run's median epoch time: what the run takes
with the cores to itself at its usual speed, the axis the plot's middle
panel uses so that a stopped leg does not bend the curve.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

from irconvert.atomic import write_bytes, write_text


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def finished(rows: list[dict[str, Any]]) -> bool:
    """Whether the run got to the end of its schedule (the lr decayed to ~0: cosine)."""
    lrs = [float(r["lr"]) for r in rows]
    return bool(lrs) and lrs[-1] <= 1e-3 * max(lrs)


def evaluations(rows: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    """``(epoch, training minutes so far, top-1)`` of every evaluated epoch."""
    out, secs = [], 0.0
    for row in rows:
        secs += float(row.get("time") or 0.0)
        if row.get("val_top1") is not None:
            out.append((int(row["epoch"]) + 1, secs / 60.0, float(row["val_top1"])))
    return out


def median_epoch_minutes(rows: list[dict[str, Any]]) -> float:
    """The run's median epoch time, in minutes (0 for a run with no timed epoch)."""
    times = [float(r["time"]) for r in rows if r.get("time")]
    return statistics.median(times) / 60.0 if times else 0.0


def table(runs: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| run | epochs | last top-1 | training minutes | minutes at the median epoch "
             "| gain per doubling of epochs |",
             "|---|---:|---:|---:|---:|---:|"]
    previous: tuple[int, float] | None = None
    for name, rows in runs.items():
        evals = evaluations(rows)
        if not evals:
            continue
        epoch, minutes, top1 = evals[-1]
        length = len(rows)
        steady = epoch * median_epoch_minutes(rows)
        gain = "-"
        if previous is not None and length > previous[0]:
            gain = f"{(top1 - previous[1]) / math.log2(length / previous[0]):+.2f}"
        if not finished(rows):
            lines.append(f"| {name} | in progress: {length} so far | {top1:.2f} at epoch "
                         f"{epoch} | {minutes:.1f} | {steady:.1f} | - |")
            continue
        lines.append(f"| {name} | {length} | {top1:.2f} | {minutes:.1f} | {steady:.1f} | {gain} |")
        previous = (length, top1)
    lines += ["", "| run | epoch | training minutes | top-1 |", "|---|---:|---:|---:|"]
    for name, rows in runs.items():
        lines += [f"| {name} | {e} | {m:.1f} | {t:.2f} |" for e, m, t in evaluations(rows)]
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, list[dict[str, Any]]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 3.8), dpi=100)
    ax_epoch, ax_min, ax_len = fig.subplots(1, 3)
    finals = []
    for name, rows in runs.items():
        evals = evaluations(rows)
        if not evals:
            continue
        ax_epoch.plot([e for e, _, _ in evals], [t for _, _, t in evals], marker=".", label=name)
        per_epoch = median_epoch_minutes(rows)
        ax_min.plot([e * per_epoch for e, _, _ in evals], [t for _, _, t in evals], marker=".",
                    label=name)
        if finished(rows):
            finals.append((len(rows), evals[-1][2], name))
    ax_epoch.set_xlabel("epoch")
    ax_epoch.set_ylabel("test top-1 (%)")
    ax_epoch.set_title("each run's evaluations")
    ax_epoch.legend(fontsize="small")
    ax_min.set_xlabel("training minutes at the run's median epoch time")
    ax_min.set_title("each run's evaluations against minutes")
    ax_len.plot([n for n, _, _ in finals], [t for _, t, _ in finals], marker="o")
    for n, t, name in finals:
        ax_len.annotate(name, (n, t), textcoords="offset points", xytext=(4, -10),
                        fontsize="small")
    ax_len.set_xscale("log", base=2)
    ax_len.set_xlabel("run length (epochs, log scale)")
    ax_len.set_title("finished runs: last evaluation against length")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.jsonl of each run")
    parser.add_argument("--names", nargs="*", help="a name per run (default: the file names)")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.md and OUT.png")
    args = parser.parse_args(argv)
    names = args.names or [p.stem for p in args.metrics]
    if len(names) != len(args.metrics):
        parser.error("give as many --names as metrics files")
    runs: dict[str, list[dict[str, Any]]] = {}
    for name, path in zip(names, args.metrics, strict=True):
        if not path.is_file():
            parser.error(f"{path}: no such file")
        runs[name] = read_rows(path)
    md = table(runs)
    print(md)
    write_text(args.out.with_suffix(".md"), md)
    write_bytes(args.out.with_suffix(".png"), plot(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
