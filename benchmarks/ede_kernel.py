#!/usr/bin/env python3
"""Cost of the EDE gradient inside a compiled activation-backward kernel, per formula.

The kernel is the one inductor fuses after every binarized activation of a
1W/1A Bi-Real block: Hardtanh's gradient mask, the EDE derivative times the
incoming gradient, plus the residual's gradient, over bf16 tensors. Only the
EDE derivative changes between rows:

* ``none``: no EDE at all (``k t x``, one multiply): the floor of the kernel;
* ``exp``: ``4 k t z / (1 + z)^2`` with ``z = exp(-2|t x|)`` (irconvert before);
* ``exp2``: the same with ``z = exp2(-2|t x| / ln 2)`` (irconvert now);
* ``tanh``: ``k t (1 - tanh(t x)^2)``, the textbook form.

    python benchmarks/ede_kernel.py --threads 1

Prints the median milliseconds per call of each compiled kernel.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

Ede = Callable[[Tensor, Tensor, Tensor], Tensor]


def _none(x: Tensor, t: Tensor, k: Tensor) -> Tensor:
    return k * t * x


def _exp(x: Tensor, t: Tensor, k: Tensor) -> Tensor:
    z = (t * x).abs().mul(-2).exp()
    return z * (4 * k * t) / (z + 1).square()


def _exp2(x: Tensor, t: Tensor, k: Tensor) -> Tensor:
    z = torch.exp2((t * x).abs() * (-2 / math.log(2)))
    return z * (4 * k * t) / (z + 1).square()


def _tanh(x: Tensor, t: Tensor, k: Tensor) -> Tensor:
    return k * t * (1 - torch.tanh(t * x).square())


FORMULAS: dict[str, Ede] = {"none": _none, "exp": _exp, "exp2": _exp2, "tanh": _tanh}


def kernel(ede: Ede) -> Callable[..., Tensor]:
    """The fused activation backward with ``ede`` as its derivative, compiled."""

    def backward(y: Tensor, grad: Tensor, residual: Tensor, t: Tensor, k: Tensor) -> Tensor:
        a = y.clamp(-1, 1)
        outside = (y <= -1) | (y >= 1)
        out = residual + ede(a.float(), t, k) * grad
        return torch.where(outside, 0.0, out).bfloat16()

    return torch.compile(backward)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--numel", type=int, default=128 * 16 * 32 * 32,
                        help="values per call (default: one 16x32x32 activation, batch 128)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    y = (torch.randn(args.numel, generator=gen) * 0.8).bfloat16()
    grad = torch.randn(args.numel, generator=gen).bfloat16()
    residual = torch.randn(args.numel, generator=gen).bfloat16()
    t, k = torch.tensor(3.0), torch.tensor(1.0)
    for name, ede in FORMULAS.items():
        fn = kernel(ede)
        for _ in range(3):
            fn(y, grad, residual, t, k)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn(y, grad, residual, t, k)
            times.append(time.perf_counter() - start)
        print(f"{name:5s} {1000 * statistics.median(times):6.2f} ms", flush=True)
    print(f"{args.numel:,} bf16 values; {machine()}; torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
