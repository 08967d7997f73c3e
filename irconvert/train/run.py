"""Entry points of a fine-tuning run: :func:`fit` a model, or load one and fit it, or resume."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from irconvert.checkpoint import check_new_run, load_resume_state, read_run_dir
from irconvert.config import TrainConfig
from irconvert.config.recipe_file import load_recipe
from irconvert.data.datasets import DataBundle, open_data
from irconvert.errors import DataError
from irconvert.models.heads import model_channels
from irconvert.outputs import CONFIG as RUN_CONFIG
from irconvert.train.distributed import cleanup
from irconvert.train.init_weights import check_init
from irconvert.train.outcome import FitResult
from irconvert.train.progress import Progress
from irconvert.train.trainer import Trainer

__all__ = ["binarize_and_train", "fit", "resume_run"]


def fit(model: nn.Module, data: DataBundle | str, recipe: TrainConfig,
        out_dir: str | os.PathLike[str], *, resume: bool = False, arch: str | None = None,
        source: dict[str, Any] | None = None, run_info: dict[str, Any] | None = None,
        replace_classifier: bool = False, quiet: bool = False, progress: Progress | None = None,
        on_step: Callable[[Trainer], None] | None = None, download: bool = False,
        evaluate_fp: bool = True, evaluate_start: bool = False) -> FitResult:
    """Binarize ``model`` and fine-tune it on ``data`` as ``recipe`` says.

    Args:
        model: the full-precision model.
        data: a :class:`DataBundle` or a data spec (``imagefolder:PATH``, ...).
        recipe: the training recipe.
        out_dir: the run directory.
        resume: continue from ``out_dir/last.pt`` (``model`` must be the same
            full-precision model the run started from).

    Returns:
        A :class:`FitResult`.

    Raises:
        TrainingInterrupted: stopped by a signal; ``last.pt`` holds the state.
        DataError, ConfigError, LoadError: bad input.
    """
    out = Path(out_dir)
    ckpt = None
    if resume:
        ckpt = load_resume_state(out)
    else:
        check_new_run(out)
        if recipe.init is not None:  # before the data is read
            check_init(recipe.init)
    if isinstance(data, str):
        data = open_data(data, channels=model_channels(model), download=download,
                         bad_files=recipe.data.bad_files)
    trainer = Trainer(model, data, recipe, out, arch=arch, source=source, run_info=run_info,
                      replace_classifier=replace_classifier, quiet=quiet, progress=progress,
                      on_step=on_step, evaluate_fp=evaluate_fp and ckpt is None,
                      evaluate_start=evaluate_start)
    try:
        return trainer.run(resume=ckpt)
    finally:
        cleanup(trainer.env)


def binarize_and_train(source: str, data: str, recipe: TrainConfig,
                       out_dir: str | os.PathLike[str], *, arch: str | None = None,
                       num_classes: int | None = None, pretrained: bool = False,
                       trust_pickle: bool = False, replace_classifier: bool = False,
                       download: bool = False, **kwargs: Any) -> FitResult:
    """Load ``source`` with :func:`irconvert.io.load_model`, then :func:`fit`."""
    from irconvert.data.datasets import parse_data_spec
    from irconvert.io import load_model

    # Check the cheap thing first: a typo in --data must not wait for a
    # model download or an architecture search.
    spec = parse_data_spec(data)
    if spec.kind != "digits" and not download and not spec.root.exists():
        raise DataError(f"{spec.root}: data folder not found")
    loaded = load_model(source, arch=arch, num_classes=num_classes, pretrained=pretrained,
                        trust_pickle=trust_pickle)
    model_arch = loaded.arch
    run_info = {"model": source, "arch": arch or loaded.arch, "num_classes": num_classes,
                "pretrained": pretrained, "trust_pickle": trust_pickle, "data": data,
                "replace_classifier": replace_classifier, "download": download}
    src = {"path": loaded.source, "sha256": loaded.sha256}
    return fit(loaded.model, data, recipe, out_dir, arch=model_arch, source=src,
               run_info=run_info, replace_classifier=replace_classifier, download=download,
               **kwargs)


def resume_run(run_dir: str | os.PathLike[str], *, overrides: TrainConfig | None = None,
               **kwargs: Any) -> FitResult:
    """Continue the run in ``run_dir`` from its ``config.yaml``, ``run.yaml`` and ``last.pt``."""
    run = Path(run_dir)
    info = read_run_dir(run)
    recipe = overrides or load_recipe(run / RUN_CONFIG)
    return binarize_and_train(
        info["model"], info["data"], recipe, run, arch=info.get("arch"),
        num_classes=info.get("num_classes"), pretrained=bool(info.get("pretrained")),
        trust_pickle=bool(info.get("trust_pickle")),
        replace_classifier=bool(info.get("replace_classifier")),
        download=bool(info.get("download")), resume=True, **kwargs)
