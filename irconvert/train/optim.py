"""Optimizer with BatchNorm/bias groups (decay-free by default), and the per-step lr schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from irconvert.config import OptimizerConfig, ScheduleConfig
from irconvert.nn import IRLayer

__all__ = ["build_optimizer", "lr_factor_fn", "param_groups"]


def param_groups(model: nn.Module, weight_decay: float, lr: float,
                 norm_lr_scale: float = 1.0,
                 latent_lr_scale: float = 1.0,
                 decay_norms: bool = False) -> list[dict[str, object]]:
    """Conv/linear weights decay; biases, BatchNorm and other 1-d params only with ``decay_norms``.

    The 1-d group (which also holds activation thresholds and RPReLU
    parameters) runs at ``lr * norm_lr_scale``. With ``latent_lr_scale``
    other than 1 the IR-Net layers' weights get a group of their own at
    ``lr * latent_lr_scale`` (otherwise they share the first group, so the
    groups of a recipe without the lever, and the optimizer state its
    checkpoints hold, stay as they were). The schedule scales every group by
    the same factor (``LambdaLR`` multiplies each group's own lr).
    """
    latent_ids: set[int] = set()
    if latent_lr_scale != 1.0:
        latent_ids = {id(m.weight) for m in model.modules()  # type: ignore[attr-defined]
                      if isinstance(m, IRLayer)}
    decay: list[nn.Parameter] = []
    latent: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in latent_ids:
            latent.append(p)
        else:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups: list[dict[str, object]] = [{"params": decay, "weight_decay": weight_decay,
                                        "lr": lr}]
    if latent:
        groups.append({"params": latent, "weight_decay": weight_decay,
                       "lr": lr * latent_lr_scale})
    if no_decay:
        # Kept a group of its own even when it decays, so the groups (and the
        # optimizer state a checkpoint holds) do not depend on decay_norms.
        groups.append({"params": no_decay, "weight_decay": weight_decay if decay_norms else 0.0,
                       "lr": lr * norm_lr_scale})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.lr, cfg.norm_lr_scale,
                          cfg.latent_lr_scale, cfg.decay_norms)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,  # type: ignore[arg-type]
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)  # type: ignore[arg-type]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)  # type: ignore[arg-type]


def lr_factor_fn(cfg: ScheduleConfig, base_lr: float, total_steps: int,
                 steps_per_epoch: int) -> Callable[[int], float]:
    """``step -> lr / base_lr`` for ``LambdaLR`` (stepped once per optimizer step)."""
    unit = steps_per_epoch if cfg.unit == "epoch" else 1
    warmup = cfg.warmup * unit
    milestones = [m * unit for m in cfg.milestones]
    start = (cfg.warmup_start_lr or 0.0) / base_lr
    floor = cfg.min_lr / base_lr

    def factor(step: int) -> float:
        if step < warmup:
            return start + (1.0 - start) * step / warmup
        if cfg.name in ("cosine", "linear"):
            span = max(total_steps - warmup, 1)
            progress = min((step - warmup) / span, 1.0)
            if cfg.name == "linear":
                return floor + (1.0 - floor) * (1.0 - progress)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if cfg.name == "step":
            return float(cfg.gamma ** sum(step >= m for m in milestones))
        return 1.0

    return factor
