#!/usr/bin/env python3
"""Training throughput of IR-Net models relative to the same model in full precision.

One training step = forward + cross-entropy + backward + SGD step, on random
CIFAR-sized inputs (the data pipeline is not measured). The models: the
full-precision CIFAR ResNet-20 and its 1W/32A and 1W/1A conversions
(``irconvert.binarize_`` defaults; 1W/1A with the Bi-Real block transform).

    python benchmarks/throughput.py                      # CPU or the visible GPU
    python benchmarks/throughput.py --device cuda --compile --out results/throughput

Prints one row per mode (images/s, ms/step, ratio to full precision) and
optionally writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

import irconvert
from irconvert.models import cifar_resnet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

MODES: dict[str, Literal[1, 32] | None] = {"fp32": None, "1w32a": 32, "1w1a": 1}


def build(mode: str, depth: int, device: torch.device) -> nn.Module:
    model = cifar_resnet(depth)
    bits = MODES[mode]
    if bits is not None:
        irconvert.binarize_(model, irconvert.BinarizeConfig(act_bits=bits), warn=False)
        irconvert.set_ede(model, 1.0, 1.0)
    return model.to(device).train()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: nn.Module, batch: int, warmup: int, iters: int, repeats: int,
            device: torch.device, compile_: bool) -> dict[str, float]:
    """Median seconds per training step over ``repeats`` runs of ``iters`` steps."""
    step_model: Any = torch.compile(model) if compile_ else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(step_model(x), y).backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(iters):
            step()
        _sync(device)
        times.append((time.perf_counter() - start) / iters)
        cpu_times.append((time.process_time() - cpu_start) / iters)
    sec = statistics.median(times)
    # process CPU seconds: less disturbed than wall time on a CPU shared with other jobs
    return {"sec_per_step": sec, "images_per_s": batch / sec, "spread": max(times) / min(times),
            "cpu_sec_per_step": statistics.median(cpu_times)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="median over this many runs")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    rows: list[dict[str, Any]] = []
    for compiled in [False, True] if args.compile else [False]:
        base = None
        for mode in args.modes:
            model = build(mode, args.depth, device)
            result = measure(model, args.batch_size, args.warmup, args.iters, args.repeats,
                             device, compiled)
            if mode == "fp32":
                base = result["images_per_s"]
            row = {"mode": mode, "compiled": compiled, **result,
                   "ratio_to_fp32": result["images_per_s"] / base if base else None}
            rows.append(row)
            ratio = f"{row['ratio_to_fp32']:.3f}" if row["ratio_to_fp32"] else "-"
            print(f"{mode:6s} compile={compiled!s:5s} {result['images_per_s']:9.1f} img/s "
                  f"{1000 * result['sec_per_step']:8.1f} ms/step  ratio {ratio}  "
                  f"(max/min {result['spread']:.2f}; CPU {result['cpu_sec_per_step']:.2f} s/step)",
                  flush=True)
    info = {"model": f"cifar_resnet{args.depth}", "batch_size": args.batch_size,
            "device": str(device), "machine": machine(device), "torch": torch.__version__,
            "warmup": args.warmup, "iters": args.iters, "repeats": args.repeats, "rows": rows}
    print(f"machine: {info['machine']}; torch {torch.__version__}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(info, indent=2))
        lines = ["| mode | compiled | images/s | ms/step | vs fp32 |", "|---|---|---|---|---|"]
        for r in rows:
            ratio = f"{r['ratio_to_fp32']:.2f}" if r["ratio_to_fp32"] else "-"
            lines.append(f"| {r['mode']} | {r['compiled']} | {r['images_per_s']:.0f} | "
                         f"{1000 * r['sec_per_step']:.1f} | {ratio} |")
        lines.append(f"\n{info['model']}, batch {args.batch_size}, {info['machine']}, "
                     f"torch {torch.__version__}")
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
