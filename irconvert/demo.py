"""``irconvert demo``: the whole pipeline, offline, in about a minute on a laptop CPU.

1. Train a small full-precision CNN (:class:`irconvert.models.digits.DigitsCNN`)
   on scikit-learn's 8x8 handwritten digits, once; it is cached.
2. Binarize it (1W/1A, default rules: stem and classifier stay fp32).
3. Fine-tune with the EDE schedule, evaluate, write a run directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from irconvert.checkpoint import atomic_save
from irconvert.config import TrainConfig
from irconvert.config.recipe_file import recipe_from_dict
from irconvert.outputs import RUN_OUTPUTS
from irconvert.train.outcome import FitResult
from irconvert.train.run import binarize_and_train

__all__ = ["DEMO_RECIPE", "default_cache_dir", "demo_recipe", "run_demo", "train_float_model"]

FP_CHECKPOINT = "digits_cnn-fp-v3.pt"
FP_EPOCHS = 15

DEMO_RECIPE: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 64,
    "optimizer": {"name": "adam", "lr": 0.005, "weight_decay": 0.0},
    "schedule": {"name": "cosine"},
    "ede": {"t_min": 0.1, "t_max": 10.0, "per": "step"},
    "binarize": {"act_bits": 1},
    "data": {"mean": [0.3075], "std": [0.3762], "crop": 8, "padding": 1, "flip": False,
             "gpu_cache": True},
    "workers": 0,
    "device": "cpu",
    "seed": 0,
}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "irconvert"


def demo_recipe(**overrides: Any) -> TrainConfig:
    """The demo's recipe, with top-level fields replaced."""
    return recipe_from_dict({**DEMO_RECIPE, **overrides})


def train_float_model(cache_dir: str | os.PathLike[str] | None = None, *,
                      epochs: int = FP_EPOCHS,
                      seed: int = 0, log: Any = None) -> Path:
    """Train the full-precision digits CNN once; returns its cached state_dict file."""
    from irconvert.data.datasets import open_data
    from irconvert.data.digits import DIGITS_MEAN, DIGITS_STD
    from irconvert.data.loaders import images_as_uint8
    from irconvert.models.digits import DigitsCNN

    name = FP_CHECKPOINT if epochs == FP_EPOCHS else FP_CHECKPOINT.replace(".pt", f"-e{epochs}.pt")
    path = Path(cache_dir or default_cache_dir()) / name
    if path.is_file():
        return path
    if log:
        log(f"training the full-precision digits CNN once (cached in {path})")
    bundle = open_data("digits")
    assert bundle.train is not None  # digits always has its training split
    x, y = images_as_uint8(bundle.train)
    x = (x.float() / 255 - DIGITS_MEAN[0]) / DIGITS_STD[0]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    steps = epochs * (len(y) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for b in range(len(y) // 64):
            idx = perm[b * 64:(b + 1) * 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    atomic_save(model.state_dict(), path)
    return path


def run_demo(out_dir: str | os.PathLike[str] = "runs/demo", *,
             cache_dir: str | os.PathLike[str] | None = None, epochs: int | None = None,
             quiet: bool = False, device: str = "cpu", progress: Any = None,
             fp_epochs: int = FP_EPOCHS) -> FitResult:
    """Run the demo pipeline; an earlier demo run in ``out_dir`` is replaced.

    Returns:
        The :class:`FitResult` (``fp_top1``: the float model, ``best_top1``: binary).
    """
    out = Path(out_dir)
    threads = torch.get_num_threads()
    if device == "cpu":
        # 8x8 images: per-op threading overhead outweighs the work, and on a
        # busy machine extra threads make it many times slower.
        torch.set_num_threads(1)
    try:
        return _run_demo(out, cache_dir, epochs, quiet, device, progress, fp_epochs)
    finally:
        torch.set_num_threads(threads)


def _run_demo(out: Path, cache_dir: str | os.PathLike[str] | None, epochs: int | None,
              quiet: bool, device: str, progress: Any, fp_epochs: int) -> FitResult:
    log = progress.log if progress is not None else (None if quiet else print)
    fp_path = train_float_model(cache_dir, epochs=fp_epochs, log=log)
    for name in RUN_OUTPUTS:  # only the files a run writes: never a whole folder
        (out / name).unlink(missing_ok=True)
    recipe = demo_recipe(device=device, **({"epochs": epochs} if epochs else {}))
    return binarize_and_train(str(fp_path), "digits", recipe, out, arch="digits_cnn",
                              num_classes=10, quiet=quiet, progress=progress)



