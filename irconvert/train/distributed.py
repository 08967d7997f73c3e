"""torch.distributed set-up from the ``torchrun`` environment (RANK, WORLD_SIZE...)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "all_reduce_sum", "cleanup", "init_distributed", "world_size"]


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world_size() -> int:
    """How many processes ``torchrun`` started (1 outside it)."""
    return _env_int("WORLD_SIZE", 1)


def init_distributed(device: torch.device) -> DistEnv:
    """Join the process group ``torchrun`` describes (NCCL on CUDA, gloo on CPU).

    Without ``WORLD_SIZE`` > 1 in the environment nothing is initialised.
    """
    world = world_size()
    if world <= 1:
        return DistEnv()
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistEnv(rank=rank, world_size=world, local_rank=local)


def all_reduce_sum(values: list[float], device: torch.device, env: DistEnv) -> list[float]:
    """Sum ``values`` over all ranks (a no-op in a single process)."""
    if not env.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def cleanup(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()
