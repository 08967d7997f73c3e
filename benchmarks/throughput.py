#!/usr/bin/env python3
"""Training throughput of IR-Net models relative to the same model in full precision.

One training step = forward + loss + backward + SGD step on CIFAR-sized
batches. Settings, side by side (``--settings``):

* ``eager``: fp32, NCHW, no compile, the trainer's defaults before the CPU
  work of issue 7 (the "before" figure);
* ``fast``: bf16 autocast (where the CPU has bf16 kernels), channels_last and
  ``torch.compile``: what the shipped recipes use;
* ``fast+kd``: ``fast`` plus the frozen teacher's forward for distillation
  (compiled, inference mode, bf16), as the 1W/1A recipe trains;
* ``fast+data``: ``fast+kd`` plus the in-memory uint8 data path (batched
  random crop, flip and normalisation of real-sized uint8 batches).

``--breakdown`` also times the parts of an eager 1W/1A step (forward,
backward, binarization, teacher forward, augmentation) one by one.
The ``fast`` settings also keep freed memory in the process as the trainer
does on the CPU (``cpu_memory: retain``, ``--cpu-memory release`` turns it
off); it is process-wide, so the settings run in the order above and
``eager`` runs before it applies. Each row reports the minor page faults
per step: glibc's default page-faults a 1W/1A step's buffers back in.
``--interleave`` lets the modes take turns within a setting (``--repeats``
rounds of ``--iters`` steps each), for ratios on a machine whose speed
drifts. ``--profile`` profiles the compiled steps of each mode (torch.profiler with
inductor's kernel records) and splits a step into convolutions and the
fused elementwise kernels (BatchNorm, activations, sign, EDE, Libra-PB),
forward and backward: where a binary step's extra time goes.

    python benchmarks/throughput.py --out results/throughput-cpu
    python benchmarks/throughput.py --device cuda --out results/throughput-gpu

Prints one row per (setting, mode) with images/s and the ratio to fp32 under
the same setting, and optionally writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

import irconvert
from irconvert.atomic import write_text
from irconvert.models import cifar_resnet
from irconvert.train.memory import retain_freed_memory

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


SETTINGS: dict[str, dict[str, bool]] = {
    "eager": {"fast": False, "kd": False, "data": False},
    "fast": {"fast": True, "kd": False, "data": False},
    "fast+kd": {"fast": True, "kd": True, "data": False},
    "fast+data": {"fast": True, "kd": True, "data": True},
}


def _loader(batch: int, device: torch.device) -> Any:
    """The trainer's in-memory path over random uint8 CIFAR-sized images."""
    from irconvert.config import DataConfig
    from irconvert.data.loaders import GPUCachedLoader

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch * 8, 3, 32, 32), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 10, (batch * 8,), generator=gen)
    cfg = DataConfig(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop=32, padding=4)
    return GPUCachedLoader(images, labels, cfg, cfg.mean, cfg.std,  # type: ignore[arg-type]
                           batch_size=batch, train=True, seed=0, device=device)


def make_step(model: nn.Module, batch: int, device: torch.device,
              setting: dict[str, bool], depth: int) -> Any:
    """One training step of ``model`` under ``setting``, as a function of no arguments."""
    from irconvert.train.precision import autocast, resolve_amp

    fast = setting["fast"]
    amp = resolve_amp(device, "bf16") if fast else "none"
    fmt = torch.channels_last if fast else torch.contiguous_format
    model = model.to(memory_format=fmt)  # type: ignore[call-arg]
    step_model: Any = torch.compile(model) if fast else model
    teacher: Any = None
    if setting["kd"]:
        teacher = cifar_resnet(depth).to(device).eval().to(memory_format=fmt)
        teacher = torch.compile(teacher) if fast else teacher
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    y0 = torch.randint(0, 10, (batch,), generator=gen).to(device)
    loader = _loader(batch, device) if setting["data"] else None
    batches: Any = None

    def next_batch() -> tuple[Any, Any]:
        nonlocal batches
        if loader is None:
            return x0, y0
        try:
            return next(batches)
        except (StopIteration, TypeError):
            batches = iter(loader)
            return next(batches)

    def step() -> None:
        x, y = next_batch()
        x = x.contiguous(memory_format=fmt)
        opt.zero_grad(set_to_none=True)
        with torch.profiler.record_function(PHASES[0]), autocast(device, amp):
            logits = step_model(x).float()
            loss = nn.functional.cross_entropy(logits, y)
            if teacher is not None:
                with torch.inference_mode():
                    t_logits = teacher(x).float().clone()
                loss = loss + nn.functional.kl_div(
                    logits.log_softmax(1), t_logits.softmax(1), reduction="batchmean")
        with torch.profiler.record_function(PHASES[1]):
            loss.backward()
        with torch.profiler.record_function(PHASES[2]):
            opt.step()

    return step


Block = tuple[float, float, float]


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _timed_block(step: Any, iters: int, device: torch.device) -> Block:
    """Wall seconds, process-CPU seconds and minor page faults per step over ``iters`` steps."""
    _sync(device)
    start, cpu_start, faults = time.perf_counter(), time.process_time(), _minor_faults()
    for _ in range(iters):
        step()
    _sync(device)
    return ((time.perf_counter() - start) / iters, (time.process_time() - cpu_start) / iters,
            (_minor_faults() - faults) / iters)


def _summary(blocks: list[Block], batch: int) -> dict[str, Any]:
    """Medians over timed blocks; CPU seconds are less disturbed than wall time
    on a CPU shared with other jobs, so they are reported beside it."""
    times = [wall for wall, _, _ in blocks]
    sec = statistics.median(times)
    return {"sec_per_step": sec, "images_per_s": batch / sec,
            "spread": max(times) / min(times),
            "cpu_sec_per_step": statistics.median(cpu for _, cpu, _ in blocks),
            "minor_faults_per_step": statistics.median(f for _, _, f in blocks)}


def measure(model: nn.Module, batch: int, warmup: int, iters: int, repeats: int,
            device: torch.device, setting: dict[str, bool], depth: int,
            profile: bool = False) -> dict[str, Any]:
    """Median seconds per training step over ``repeats`` runs of ``iters`` steps."""
    step = make_step(model, batch, device, setting, depth)
    for _ in range(warmup):
        step()
    blocks = [_timed_block(step, iters, device) for _ in range(repeats)]
    out = _summary(blocks, batch)
    if profile:
        out["profile_ms"] = profile_step(step, iters)
    return out


PHASES = ("irc:forward", "irc:backward", "irc:optimizer")
TOP_KERNELS = 5
ABBREVIATIONS = (("_native_batch_norm_legit_functional", "bn"),
                 ("native_batch_norm_backward", "bn_bwd"), ("convolution_backward", "conv_bwd"))


def profile_step(step: Any, iters: int) -> dict[str, float]:
    """Milliseconds per step of convolutions and fused kernels, forward and backward.

    Each profiled event is charged to the step phase it ran under (the
    ``record_function`` ranges of ``step``); inductor's fused kernels show
    up as ``cpp_fused`` records only when ``cpp.enable_kernel_profile`` was
    set before compiling (``main`` does that for ``--profile``).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            step()
    parts: dict[str, float] = {}
    kernels: dict[str, float] = {}
    for event in prof.events():
        name, phase = event.name, None
        parent = event.cpu_parent
        while parent is not None:
            if parent.name in PHASES:
                phase = parent.name.split(":")[1]
            parent = parent.cpu_parent
        if phase is None or name in PHASES:
            continue
        if name in ("aten::mkldnn_convolution", "aten::convolution_backward"):
            kind = "convolutions"
        elif "cpp_fused_" in name:
            kind = "fused elementwise"
            # the kernel's name lists the ops inductor fused into it
            ops = name.split("cpp_fused_", 1)[1].rsplit("_", 1)[0]
            for long, short in ABBREVIATIONS:
                ops = ops.replace(long, short)
            kernel = f"kernel ({phase}): {ops}"
            kernels[kernel] = kernels.get(kernel, 0.0) + event.self_cpu_time_total / 1000 / iters
        else:
            continue
        key = f"{phase}: {kind}"
        parts[key] = parts.get(key, 0.0) + event.self_cpu_time_total / 1000 / iters
    for phase in PHASES:
        total = sum(e.cpu_time_total for e in prof.events() if e.name == phase)
        parts[f"{phase.split(':')[1]}: total"] = total / 1000 / iters
    # the costliest fused kernels (summed over kernels of the same ops): where to look next
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:TOP_KERNELS]
    return dict(sorted(parts.items())) | dict(top)


def measure_interleaved(modes: list[str], args: Any, device: torch.device,
                        setting: dict[str, bool]) -> dict[str, dict[str, Any]]:
    """Like :func:`measure`, but the modes take turns, ``iters`` steps each, ``repeats`` rounds.

    On a machine whose speed drifts (a shared host), back-to-back blocks of one
    mode and then the other can differ by 10% for nothing but the drift;
    taking turns exposes every mode to the same drift, so the ratio holds.
    """
    steps = {m: make_step(build(m, args.depth, device), args.batch_size, device, setting,
                          args.depth) for m in modes}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    blocks: dict[str, list[Block]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode, step in steps.items():
            blocks[mode].append(_timed_block(step, args.iters, device))
    return {mode: _summary(b, args.batch_size) for mode, b in blocks.items()}


def _ms(fn: Any, iters: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return 1000 * (time.perf_counter() - start) / iters


def breakdown(batch: int, depth: int, device: torch.device) -> dict[str, float]:
    """Milliseconds per step of each part of an eager fp32 1W/1A training step."""
    from irconvert.functional import ede_sign, libra_pb
    from irconvert.nn import IRLayer

    model = build("1w1a", depth, device)
    teacher = cifar_resnet(depth).to(device).eval()
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    layers = [m for m in model.modules() if isinstance(m, IRLayer)]
    acts: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _, a: acts.append(a[0].detach()))
             for m in layers]
    model(x)
    for h in hooks:
        h.remove()

    def fwd_bwd() -> None:
        nn.functional.cross_entropy(model(x), y).backward()

    def binarize() -> None:
        for m, a in zip(layers, acts, strict=True):
            w = m.weight.detach().requires_grad_()  # type: ignore[union-attr]
            a = a.requires_grad_()
            (libra_pb(w, 1.0, 1.0).sum() + ede_sign(a, 1.0, 1.0).sum()).backward()

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def teacher_fwd() -> None:
        with torch.inference_mode():
            teacher(x)

    loader = _loader(batch, device)

    def augment() -> None:
        next(iter(loader))

    total = _ms(fwd_bwd)
    fwd = _ms(forward)
    return {"forward": fwd, "backward (step - forward)": total - fwd,
            "binarization fwd+bwd (all layers)": _ms(binarize),
            "teacher forward": _ms(teacher_fwd), "augmentation (batched)": _ms(augment),
            "whole step": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="median over this many runs")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the parts of an eager 1W/1A step")
    parser.add_argument("--interleave", action="store_true",
                        help="modes take turns (iters steps each, repeats rounds): "
                        "ratios that hold on a machine whose speed drifts")
    parser.add_argument("--profile", action="store_true",
                        help="also split each compiled step into convolutions and fused kernels")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--cpu-memory", choices=("retain", "release"), default="retain",
                        help="the fast settings keep freed memory in the process, as the "
                        "trainer's default cpu_memory: retain does (glibc; process-wide)")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if args.profile and args.interleave:
        parser.error("--profile measures each mode on its own; drop --interleave")
    if args.profile:
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True  # before anything compiles
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    rows: list[dict[str, Any]] = []
    retained = False
    for setting in [s for s in SETTINGS if s in args.settings]:  # eager before retaining
        if SETTINGS[setting]["fast"] and device.type == "cpu" and args.cpu_memory == "retain":
            retained = retain_freed_memory()
        base = None
        interleaved = (measure_interleaved(args.modes, args, device, SETTINGS[setting])
                       if args.interleave else {})
        for mode in args.modes:
            if args.interleave:
                result = interleaved[mode]
            else:
                model = build(mode, args.depth, device)
                result = measure(model, args.batch_size, args.warmup, args.iters,
                                 args.repeats, device, SETTINGS[setting], args.depth,
                                 args.profile)
            if mode == "fp32":
                base = result["images_per_s"]
            row = {"mode": mode, "setting": setting, "retained_memory": retained, **result,
                   "ratio_to_fp32": result["images_per_s"] / base if base else None}
            rows.append(row)
            ratio = f"{row['ratio_to_fp32']:.3f}" if row["ratio_to_fp32"] else "-"
            print(f"{mode:6s} {setting:9s} {result['images_per_s']:9.1f} img/s "
                  f"{1000 * result['sec_per_step']:8.1f} ms/step  ratio {ratio}  "
                  f"(max/min {result['spread']:.2f}; CPU {result['cpu_sec_per_step']:.2f} s/step; "
                  f"{result['minor_faults_per_step']:.0f} page faults/step)",
                  flush=True)
            for part, ms in result.get("profile_ms", {}).items():
                print(f"    {part:32s} {ms:8.1f} ms/step", flush=True)
    parts = breakdown(args.batch_size, args.depth, device) if args.breakdown else {}
    for name, ms in parts.items():
        print(f"breakdown {name:18s} {ms:8.1f} ms/step")
    info = {"model": f"cifar_resnet{args.depth}", "batch_size": args.batch_size,
            "breakdown_ms": parts,
            "device": str(device), "machine": machine(device), "torch": torch.__version__,
            "warmup": args.warmup, "iters": args.iters, "repeats": args.repeats, "rows": rows}
    print(f"machine: {info['machine']}; torch {torch.__version__}")
    if args.out:
        write_text(args.out.with_suffix(".json"), json.dumps(info, indent=2))
        lines = ["| setting | mode | images/s | ms/step | vs fp32 (same setting) "
                 "| page faults/step | memory retained |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            ratio = f"{r['ratio_to_fp32']:.2f}" if r["ratio_to_fp32"] else "-"
            lines.append(f"| {r['setting']} | {r['mode']} | {r['images_per_s']:.0f} | "
                         f"{1000 * r['sec_per_step']:.1f} | {ratio} | "
                         f"{r['minor_faults_per_step']:.0f} | "
                         f"{'yes' if r['retained_memory'] else 'no'} |")
        profiled = [r for r in rows if "profile_ms" in r]
        if profiled:
            keys = sorted({k for r in profiled for k in r["profile_ms"]})
            lines += ["", "| part of a step (ms, profiled) | "
                      + " | ".join(f"{r['setting']} {r['mode']}" for r in profiled) + " |",
                      "|---|" + "---:|" * len(profiled)]
            lines += [f"| {k} | " + " | ".join(f"{r['profile_ms'].get(k, 0.0):.1f}"
                                               for r in profiled) + " |" for k in keys]
        if parts:
            lines += ["", "| part of an eager 1W/1A step | ms |", "|---|---|"]
            lines += [f"| {k} | {v:.1f} |" for k, v in parts.items()]
        lines.append(f"\n{info['model']}, batch {args.batch_size}, {info['machine']}, "
                     f"torch {torch.__version__}")
        write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
