"""Why compare() runs onnxruntime without spin-waiting: its cost and what it spares OpenVINO.

In one process, onnxruntime's idle intra-op workers spin-wait for the next op
by default. This times, on the files ``benchmarks/inference.py --workdir DIR``
keeps (ResNet-18, 224x224, batch 1):

- the OpenVINO binary IR right after an onnxruntime session ran, with the
  session spinning and with it asleep (``session.intra_op.allow_spinning = 0``);
- onnxruntime fp32 and the binary ONNX themselves, spinning and asleep.

Each setting runs in a fresh child process, so one cannot leave threads
behind for the next. One thread has no worker pool: run it with ``--threads 2``
or more.

Usage:
    python benchmarks/inference.py --workdir /tmp/infbench ...
    python benchmarks/ort_spin.py /tmp/infbench [--threads 2] [--runs 30] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_flags, load_average, machine

from irconvert.atomic import write_text


def child(workdir: Path, threads: int, runs: int, spin: bool, openvino: bool,
          onnx_name: str) -> dict[str, float]:
    """Median ms of the OpenVINO binary IR after onnxruntime ran (or of onnxruntime)."""
    import numpy as np
    import onnxruntime as ort

    from irconvert.export.engines import ort_options

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    session = ort.InferenceSession(str(workdir / onnx_name), ort_options(threads, spin=spin),
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if not openvino:
        for _ in range(3):
            session.run(None, {name: x})
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(None, {name: x})
            times.append(time.perf_counter() - t0)
        return {"ms": statistics.median(times) * 1000}
    from irconvert.export.openvino_export import compile_openvino

    request = compile_openvino(workdir / "resnet18_bin_ov" / "model.xml", 1,
                               threads).create_infer_request()
    for _ in range(3):
        request.infer({0: x})
    times = []
    for _ in range(max(1, runs // 10)):
        for _ in range(4):  # onnxruntime's turn, as in compare()'s round robin
            session.run(None, {name: x})
        for _ in range(10):
            t0 = time.perf_counter()
            request.infer({0: x})
            times.append(time.perf_counter() - t0)
    return {"ms": statistics.median(times) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path, help="what benchmarks/inference.py --workdir kept")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        spin, openvino, onnx_name = json.loads(args.child)
        print(json.dumps(child(args.workdir, args.threads, args.runs, spin, openvino,
                               onnx_name)))
        return
    if args.threads < 2:
        ap.error("--threads must be at least 2: one thread has no workers to spin")
    settings = [
        ("OpenVINO binary IR, right after onnxruntime binary ONNX", True, "resnet18_bin.onnx"),
        ("onnxruntime fp32", False, "resnet18_fp32.onnx"),
        ("onnxruntime binary ONNX", False, "resnet18_bin.onnx"),
    ]
    load_start = load_average()
    rows = []
    for label, openvino, onnx_name in settings:
        ms = {}
        for spin in (True, False):
            out = subprocess.run(
                [sys.executable, __file__, str(args.workdir), "--threads", str(args.threads),
                 "--runs", str(args.runs), "--child", json.dumps([spin, openvino, onnx_name])],
                check=True, capture_output=True, text=True, env=os.environ.copy())
            ms[spin] = json.loads(out.stdout.strip().splitlines()[-1])["ms"]
        rows.append(f"| {label} | {ms[True]:.2f} | {ms[False]:.2f} | "
                    f"{ms[True] / ms[False]:.2f}x |")
        print(rows[-1], flush=True)
    load_end = load_average()
    load = ("load average unknown" if load_start is None or load_end is None else
            f"load average {load_start:.2f} at the start, {load_end:.2f} at the end")
    lines = [
        f"## onnxruntime spin-waiting beside OpenVINO: ResNet-18, batch 1, {args.threads} threads",
        "",
        f"Machine: {machine()}; flags: {', '.join(cpu_flags()) or 'unknown'}; {load}. "
        f"Median of {args.runs} runs, each setting in a fresh process.",
        "",
        "| timed | onnxruntime spinning, ms | asleep, ms | spinning / asleep |",
        "|---|---:|---:|---:|",
        *rows,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
