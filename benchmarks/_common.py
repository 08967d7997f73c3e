"""What every benchmark reports about where it ran."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def machine(device: torch.device | None = None) -> str:
    """CPU model, its vector ISA and bf16 support, thread count (and the GPU on CUDA).

    The hosts behind one CPU name differ ("AMD EPYC" has been both a Zen 4
    with AVX512_BF16 and a Zen 3 with AVX2 only), and the ISA decides
    whether ``amp: bf16`` applies; so it is part of every result.
    """
    from irconvert.train.precision import cpu_bf16_supported

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    isa = torch.backends.cpu.get_cpu_capability()
    bf16 = "bf16" if cpu_bf16_supported() else "no bf16"
    text = f"{cpu} ({isa}, {bf16}), {torch.get_num_threads()} threads"
    if device is not None and device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)} (host: {text})"
    return text


# The instructions that decide int8, bf16 and popcount speed, as /proc/cpuinfo names them.
INFERENCE_FLAGS = ("amx_int8", "amx_bf16", "avx512_vnni", "avx_vnni", "avx512_bf16",
                   "avx512_vpopcntdq", "avx512f", "avx2")


def cpu_flags() -> list[str]:
    """Which of :data:`INFERENCE_FLAGS` this CPU has (empty where /proc/cpuinfo is missing)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return [f for f in INFERENCE_FLAGS if f in flags]


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none).

    Timings taken while other work runs on the same cores (a training run)
    are not the machine's, and engines that share a core's AMX or AVX-512
    units with it suffer most; reports print the load at the start and the
    end of their timed part so a reader can tell. The benchmark's own
    threads count too, and the average trails the load by about a minute.
    """
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
