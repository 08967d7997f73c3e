"""What every benchmark reports about where it ran."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def machine(device: torch.device | None = None) -> str:
    """CPU model and thread count (and the GPU name on CUDA), in words."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {torch.get_num_threads()} threads"
    if device is not None and device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)} (host: {text})"
    return text
