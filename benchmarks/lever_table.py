#!/usr/bin/env python3
"""Training levers side by side: test top-1 at equal epochs, each against the baseline.

Each run is ``NAME=METRICS`` (a run's ``metrics.jsonl``); ``NAME=METRICS:raw``
reads the ``raw_val_top1`` column instead, the trained weights of a run with
``ema`` on (the same trajectory without the average: a baseline that costs
no run of its own). Writes ``OUT.md`` (a row per run: top-1 at each evaluated
epoch (``--at``: only those), the last one's difference from ``--baseline`` or the run ``--pair``
names for it at the same epoch (``--ends``: from its last evaluation, for
runs of equal minutes and different lengths), the median seconds of an
epoch and the training minutes) and ``OUT.png`` (the curves).

    python benchmarks/lever_table.py \\
        shipped=results/levers/ema-20ep.jsonl:raw ema=results/levers/ema-20ep.jsonl \\
        init-1w32a=results/levers/init-1w32a-20ep.jsonl \\
        shipped-seed1=results/levers/ema-seed1-20ep.jsonl:raw \\
        ema-seed1=results/levers/ema-seed1-20ep.jsonl --baseline shipped \\
        --pair ema-seed1=shipped-seed1 --out results/levers/table

Minutes are the sum of the epochs' training-loop times (``time``; evaluation
and start-up left out) as the machine ran them: runs that shared the cores
(two at a time, one thread each) say so in their row names or the docs.
"""

from __future__ import annotations

import argparse
import io
import statistics
from pathlib import Path
from typing import Any

from long_run_curve import read_rows

from irconvert.atomic import write_bytes, write_text


def curve(rows: list[dict[str, Any]], column: str) -> dict[int, float]:
    """``{epoch (1-based): top-1}`` of every evaluated epoch."""
    out = {int(r["epoch"]) + 1: float(r[column]) for r in rows if r.get(column) is not None}
    if not out and any(r.get("val_top1") is not None for r in rows):
        raise SystemExit(f"no {column} in these metrics: was ema on?")
    return out


def parse_run(spec: str) -> tuple[str, Path, str]:
    name, sep, rest = spec.partition("=")
    if not sep or not name:
        raise SystemExit(f"{spec!r}: expected NAME=METRICS[:raw]")
    path, _, kind = rest.partition(":")
    if kind not in ("", "raw"):
        raise SystemExit(f"{spec!r}: the only suffix is :raw")
    return name, Path(path), "raw_val_top1" if kind else "val_top1"


def table(curves: dict[str, dict[int, float]], timing: dict[str, tuple[float, float]],
          baseline: str | None, paired: dict[str, str] | None = None,
          ends: bool = False, at: list[int] | None = None) -> str:
    """The markdown table; ``ends``: compare each run's last evaluation with its
    baseline's last, whatever the two lengths (runs of equal minutes, not epochs);
    ``at``: only these epochs get a column (long runs evaluate 30 times and more),
    the difference is still taken at each run's last evaluation."""
    epochs = sorted({e for c in curves.values() for e in c})
    if at:
        missing = sorted(set(at) - set(epochs))
        if missing:
            # A column asked for and silently left out reads as "not measured
            # here" when the user mistyped it or the runs evaluate elsewhere.
            raise SystemExit(f"--at {' '.join(map(str, missing))}: no run evaluated "
                             f"that epoch (evaluated: {epochs[0]}..{epochs[-1]})")
        epochs = [e for e in epochs if e in set(at)]
    head = "| run | " + " | ".join(f"epoch {e}" for e in epochs)
    head += f" | {'last - baseline last' if ends else 'last - baseline'}"
    head += " | s / epoch (median) | training minutes |"
    lines = [head, "|---|" + "---:|" * (len(epochs) + 3)]
    paired = paired or {}
    bases = {baseline, *paired.values()}
    for name, c in curves.items():
        cells = [f"{c[e]:.2f}" if e in c else "-" for e in epochs]
        last = max(c) if c else None
        diff = "-"
        base = curves.get(paired.get(name, baseline or ""))
        if base and last is not None and name not in bases:
            if ends:
                diff = f"{c[last] - base[max(base)]:+.2f}"
            elif last in base:
                diff = f"{c[last] - base[last]:+.2f}"
        secs, minutes = timing[name]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {diff} | {secs:.1f} | {minutes:.1f} |")
    return "\n".join(lines) + "\n"


def plot(curves: dict[str, dict[int, float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        ax.plot(list(c), list(c.values()), marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=METRICS or NAME=METRICS:raw")
    parser.add_argument("--baseline", help="the NAME the last column compares with")
    parser.add_argument("--pair", action="append", default=[], metavar="NAME=BASE",
                        help="compare NAME with BASE instead (a run of another seed)")
    parser.add_argument("--ends", action="store_true",
                        help="compare last evaluations whatever the lengths (equal minutes)")
    parser.add_argument("--at", type=int, nargs="+", metavar="EPOCH",
                        help="only these epochs get a column (default: every evaluated one)")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.md and OUT.png")
    args = parser.parse_args(argv)
    curves: dict[str, dict[int, float]] = {}
    timing: dict[str, tuple[float, float]] = {}
    for spec in args.runs:
        name, path, column = parse_run(spec)
        if not path.is_file():
            raise SystemExit(f"{path}: no such file")
        rows = read_rows(path)
        curves[name] = curve(rows, column)
        times = [float(r["time"]) for r in rows if r.get("time")]
        timing[name] = (statistics.median(times) if times else 0.0, sum(times) / 60.0)
    if args.baseline and args.baseline not in curves:
        raise SystemExit(f"--baseline {args.baseline}: not one of {', '.join(curves)}")
    paired = dict(p.split("=", 1) for p in args.pair)
    for name, base in paired.items():
        if name not in curves or base not in curves:
            raise SystemExit(f"--pair {name}={base}: not two of {', '.join(curves)}")
    text = table(curves, timing, args.baseline, paired, ends=args.ends, at=args.at)
    print(text, end="")
    write_text(args.out.with_suffix(".md"), text)
    write_bytes(args.out.with_suffix(".png"), plot(curves))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
