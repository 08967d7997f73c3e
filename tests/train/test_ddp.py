"""Data-parallel fine-tuning: two gloo processes on the CPU end with identical weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from irconvert.config.recipe_file import recipe_from_dict
    from irconvert.train.run import fit
    from tests.conftest import TinyNet

    recipe = recipe_from_dict({
        "epochs": 2, "batch_size": 4, "workers": 0, "device": "cpu", "seed": 3,
        "optimizer": {"lr": 0.05},
        "data": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "crop": 8, "padding": 1},
    })
    torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
    model = TinyNet()
    seen: list[int] = []
    fit(model, data, recipe, out, quiet=True, on_step=lambda t: seen.append(t.global_step))
    torch.save({"model": model.state_dict(), "steps": seen}, Path(out).parent / f"rank{rank}.pt")


def test_two_gloo_ranks_end_identical(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    from tests._train_helpers import make_imagefolder

    root = make_imagefolder(tmp_path / "data")
    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), f"imagefolder:{root}", str(out)), nprocs=2,
             join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # 48 images / 2 ranks / batch 4 = 6 steps per epoch on each rank
    assert r0["steps"] == r1["steps"] == list(range(1, 13))
    for key, value in r0["model"].items():
        assert torch.equal(value, r1["model"][key]), key
    assert (out / "last.pt").is_file() and (out / "metrics.jsonl").is_file()
    saved = torch.load(out / "last.pt", weights_only=True)["model"]
    for key, value in saved.items():
        assert torch.equal(value, r0["model"][key]), key


def test_cli_under_torchrun(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "irconvert", "binarize", "digits_cnn", "--data", "digits",
           "--out", str(out), "--steps", "2", "--batch-size", "16", "--workers", "0",
           "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "last.pt").is_file()
    assert proc.stdout.count("full-precision top-1") == 1  # only rank 0 prints a summary
