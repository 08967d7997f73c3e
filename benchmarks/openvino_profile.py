"""Where an OpenVINO IR spends its time: per-layer CPU profile grouped by layer type and kernel.

Compiles the IR for the CPU (fixed batch, ``INFERENCE_NUM_THREADS``; the exact
f32 precision hint, or with ``--hint default`` the plugin's own: bf16 float
layers on CPUs with AMX or AVX512_BF16),
runs it with ``PERF_COUNT`` on, takes each layer's median time over the timed
runs and prints a markdown table grouped by (layer type, kernel), slowest
first, plus the nodes the plugin fused into a neighbour (0 ms, exec type
``undef``). Per-layer timing itself costs time: the sum of the layers can
exceed the end-to-end latency measured in the same (profiled) runs.

Usage:
    python benchmarks/openvino_profile.py /tmp/infbench/resnet18_bin_ov [--batch 1]
        [--threads 1] [--runs 30] [--top 10] [--hint f32|default]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from irconvert.export.openvino_export import XML_NAME, import_openvino


def profile(xml: Path, batch: int, threads: int, runs: int, warmup: int = 5,
            hint: str = "f32") -> tuple[dict[tuple[str, str, str], float], float]:
    """``({(name, layer type, kernel): median ms}, median end-to-end ms)``."""
    ov = import_openvino()
    core = ov.Core()
    model = core.read_model(str(xml))
    shape = [batch] + [d.get_length() for d in list(model.input(0).get_partial_shape())[1:]]
    model.reshape({model.input(0).get_any_name(): shape})
    config: dict[str, object] = {"PERF_COUNT": True}
    if hint == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    request = core.compile_model(model, "CPU", config).create_infer_request()
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    for _ in range(warmup):
        request.infer({0: x})
    times: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    total: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer({0: x})
        total.append((time.perf_counter() - t0) * 1e3)
        for p in request.get_profiling_info():
            times[(p.node_name, p.node_type, p.exec_type)].append(
                p.real_time.total_seconds() * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}, float(np.median(total))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ir", type=Path, help="model.xml or a directory holding it")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="0 = all")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--top", type=int, default=0, help="also list the N slowest layers")
    parser.add_argument("--hint", choices=["f32", "default"], default="f32",
                        help="precision hint: exact f32, or the plugin's default (bf16 on "
                        "CPUs that have it)")
    args = parser.parse_args()
    xml = args.ir / XML_NAME if args.ir.is_dir() else args.ir
    layers, latency = profile(xml, args.batch, args.threads, args.runs, hint=args.hint)

    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    fused: Counter[str] = Counter()
    for (_, kind, kernel), ms in layers.items():
        if kernel == "undef":
            fused[kind] += 1
        elif kind not in ("Input", "Output", "Const", "Parameter", "Result"):
            groups[(kind, kernel)].append(ms)
    layer_sum = sum(sum(v) for v in groups.values())
    print(f"{xml}: batch {args.batch}, threads {args.threads or 'all'}, {args.hint} hint, "
          f"median of "
          f"{args.runs} runs: end-to-end {latency:.2f} ms, sum of layers {layer_sum:.2f} ms\n")
    print("| layer type | kernel | layers | ms | share |")
    print("|---|---|---:|---:|---:|")
    for (kind, kernel), group in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {kind} | {kernel} | {len(group)} | {sum(group):.3f} | "
              f"{100 * sum(group) / layer_sum:.1f} % |")
    print("\nfused into a neighbour (0 ms): "
          + (", ".join(f"{k} x{n}" for k, n in fused.most_common()) or "none"))
    if args.top:
        print()
        for (name, kind, kernel), ms in sorted(layers.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"{ms:8.3f} ms  {kind:18s} {kernel:28s} {name}")


if __name__ == "__main__":
    main()
