"""What every benchmark reports about where it ran."""

from __future__ import annotations

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
