"""Tiny synthetic data for the training tests: a learnable 4-class ImageFolder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def make_imagefolder(root: Path, *, classes: int = 4, train: int = 12, val: int = 6,
                     size: int = 8, val_name: str = "val") -> Path:
    """Each class has a bright colour channel or a bright top half."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), (val_name, val)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
                if c < 3:
                    arr[..., c] += 150
                else:
                    arr[: size // 2] += 150
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


def fit_on_one_thread(*args: Any, **kwargs: Any) -> Any:
    """``fit`` on one thread: a run compared bit for bit with a resumed one needs the
    same thread count as the resume (float sums depend on it)."""
    import torch

    from irconvert.train.run import fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fit(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def cut_and_resume(make: Any, data: str, recipe: Any, out: Path, *, at_step: int,
                   **kwargs: Any) -> None:
    """Fit ``make()`` until step ``at_step`` (stopped as SIGTERM would), then ``--resume``."""
    import pytest

    from irconvert.train.outcome import TrainingInterrupted
    from irconvert.train.run import fit

    def stop(trainer: Any) -> None:
        trainer.stop_requested = trainer.global_step == at_step

    with pytest.raises(TrainingInterrupted):
        fit(make(), data, recipe, out, quiet=True, on_step=stop, **kwargs)
    fit(make(), data, recipe, out, quiet=True, resume=True, **kwargs)
