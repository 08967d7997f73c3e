"""The device a run uses, and its mixed precision on CUDA and on CPUs.

On x86 servers bf16 matrix kernels exist as AVX512_BF16 (Zen 4, Cooper Lake)
or AMX (Sapphire Rapids and later); oneDNN uses them under
``torch.autocast("cpu", torch.bfloat16)``. Elsewhere bf16 on the CPU is
emulated and slower than fp32, so ``amp: bf16`` falls back to fp32 there
(the trainer says so once). fp16 autocast exists only on CUDA here.

bf16 keeps fp32's exponent range, so a sign sees the same sign of a value
except within bf16 rounding (8 bits of mantissa) of zero; BatchNorm runs in
fp32 under autocast, and the learnt thresholds are subtracted in the input's
dtype. The ablation in docs/benchmarks.md measures the accuracy effect.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

import torch

from irconvert.errors import ConfigError

__all__ = ["autocast", "cpu_bf16_supported", "resolve_amp", "resolve_device"]


@functools.cache
def cpu_bf16_supported() -> bool:
    """Whether this CPU has native bf16 kernels (AVX512_BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_amp(device: torch.device, amp: str) -> str:
    """The precision a run on ``device`` gets for recipe value ``amp``.

    ``none`` stays ``none``; on CUDA both ``bf16`` and ``fp16`` apply; on the
    CPU ``bf16`` applies where :func:`cpu_bf16_supported`, else ``none``, and
    ``fp16`` is ``none``.
    """
    if amp == "none" or device.type == "cuda":
        return amp
    if device.type == "cpu" and amp == "bf16" and cpu_bf16_supported():
        return "bf16"
    return "none"


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context for an already resolved ``amp`` (see :func:`resolve_amp`)."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> this rank's CUDA device when there is one, else the CPU."""
    try:
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            return torch.device("cpu")
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"field 'device' must be auto, cpu, cuda or cuda:N, "
                          f"got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"field 'device' is {name!r} but CUDA is not available here")
    return device
