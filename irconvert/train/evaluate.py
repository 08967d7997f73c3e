"""Evaluation: loss, top-1 and top-5 of a model (or any logits function) on a loader.

Opening what a user points ``irconvert eval`` at (a run, an export, an
original model) is :mod:`irconvert.evaluate`'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from irconvert.train.distributed import DistEnv, all_reduce_sum
from irconvert.train.metrics import correct_topk
from irconvert.train.precision import autocast

__all__ = ["EvalResult", "evaluate", "evaluate_fn"]


@dataclass(frozen=True)
class EvalResult:
    loss: float
    top1: float
    top5: float
    images: int

    def to_dict(self) -> dict[str, float | int]:
        return {"loss": self.loss, "top1": self.top1, "top5": self.top5, "images": self.images}


def evaluate_fn(logits_fn: Callable[[Tensor], Tensor], loader: Iterable[Any],
                device: torch.device, *, env: DistEnv | None = None,
                amp: str = "none", channels_last: bool = False) -> EvalResult:
    """Evaluate any ``inputs -> logits`` function; sums are all-reduced over ranks."""
    env = env or DistEnv()
    loss_sum, top1, top5, n = 0.0, 0, 0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            inputs = inputs.to(device, non_blocking=True)
            if channels_last and inputs.ndim == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            targets = targets.to(device, non_blocking=True)
            with autocast(device, amp):
                logits = logits_fn(inputs)
            logits = logits.float()
            loss_sum += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
            c1, c5 = correct_topk(logits, targets)
            top1, top5, n = top1 + c1, top5 + c5, n + len(targets)
    loss_sum, top1_f, top5_f, n_f = all_reduce_sum([loss_sum, top1, top5, n], device, env)
    n_f = max(n_f, 1.0)
    return EvalResult(loss=loss_sum / n_f, top1=100.0 * top1_f / n_f,
                      top5=100.0 * top5_f / n_f, images=int(n_f))


def evaluate(model: nn.Module, loader: Iterable[Any], device: torch.device, *,
             env: DistEnv | None = None, amp: str = "none",
             channels_last: bool = False) -> EvalResult:
    """Evaluate ``model`` in eval mode (its train/eval mode is restored after)."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_fn(model, loader, device, env=env, amp=amp, channels_last=channels_last)
    finally:
        model.train(was_training)
