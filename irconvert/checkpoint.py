"""Run directories and run checkpoints: finding, reading, writing, resuming.

Everything irconvert knows about its own outputs lives here: what a run
directory holds, which file in it a command means, the checkpoint format,
and one-line errors for everything that can be wrong with them. (Users'
full-precision checkpoint files are :mod:`irconvert.io.checkpoint_file`'s job;
exported files are :mod:`irconvert.export`'s.)

What a run directory holds, and every other output's name and overwrite
rule, is :mod:`irconvert.outputs`'s.

A run checkpoint is a plain dict saved with ``torch.save`` that loads with
``weights_only=True``:

    format:        "irconvert-checkpoint"
    version:       1
    arch:          registry name the model is rebuilt from (``cifar_resnet20``,
                   ``resnet18``, ``timm:resnet18``) or None (pickled module)
    num_classes:   int
    binarize:      BinarizeConfig.to_dict()
    model:         state_dict of the binarized model (latent weights, EDE t/k)
    source:        {"path": ..., "sha256": ...} identity of the original model
    ...            trainer state (optimizer, scheduler, epoch, rng, recipe)

Rebuilding is ``build_model(arch) -> binarize_(config) -> load_state_dict``;
block transforms change no keys, so they replay exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from irconvert.atomic import atomic_file
from irconvert.config import BinarizeConfig
from irconvert.convert import binarize_
from irconvert.errors import ConfigError, LoadError
from irconvert.io.checkpoint_file import FORMAT, is_checkpoint, read_checkpoint
from irconvert.models import build_model
from irconvert.outputs import (
    BEST,
    CONFIG,
    FOLDER_CHECKPOINTS,
    LAST,
    RUN_FILES,
    RUN_INFO,
)

__all__ = [
    "FORMAT",
    "atomic_save",
    "check_new_run",
    "check_resumable",
    "find_checkpoint",
    "is_checkpoint",
    "is_run_dir",
    "load_resume_state",
    "load_run_checkpoint",
    "missing_run_file",
    "model_from_checkpoint",
    "new_checkpoint",
    "peek_checkpoint",
    "read_run_dir",
]

VERSION = 1

# -- run directories ---------------------------------------------------------
def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a fine-tuning run directory (it has a recipe and a run.yaml)."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG).is_file() and (p / RUN_INFO).is_file()


def missing_run_file(path: str | os.PathLike[str]) -> str | None:
    """The first file ``--resume`` needs that ``path`` lacks (None: it can be resumed)."""
    p = Path(path)
    return next((name for name in RUN_FILES if not (p / name).is_file()), None)


def check_resumable(path: str | os.PathLike[str], *, needs: tuple[str, ...] = RUN_FILES) -> Path:
    """``path`` as a run directory ``--resume`` can continue, checked cheaply.

    Before a model is loaded or data opened: the folder exists, holds the
    files in ``needs`` and its ``last.pt`` is not cut short (the zip index
    is read, not the tensors).

    Raises:
        LoadError: one line saying what ``path`` is instead.
    """
    import zipfile

    run = Path(path)
    if not run.exists():
        raise LoadError(f"{run}: no such run directory; --resume continues a run: give its "
                        "folder as MODEL, or as --out with the original MODEL")
    if run.is_file():
        hint = (f"; pass its folder {run.parent}" if run.name in (LAST, BEST)
                and is_run_dir(run.parent) else "")
        raise LoadError(f"{run}: --resume takes a run directory (the --out of "
                        f"'irconvert binarize'), not a file{hint}")
    missing = [name for name in needs if not (run / name).is_file()]
    if missing == [LAST] and is_run_dir(run):
        raise LoadError(f"{run}: the run there never finished an epoch (no {LAST}); "
                        "start it again without --resume")
    if missing:
        raise LoadError(f"{run}: not a run directory (no {', '.join(missing)}); --resume "
                        "continues the --out folder of an 'irconvert binarize' run")
    empty = [name for name in needs if name != LAST and (run / name).stat().st_size == 0]
    if empty:
        raise LoadError(f"{run / empty[0]}: empty (a truncated copy?); --resume needs the "
                        "files the run wrote, as it wrote them")
    last = run / LAST
    if not zipfile.is_zipfile(last):
        raise LoadError(f"{last}: truncated or damaged, so the run cannot be resumed from it "
                        f"(was it copied?); start the run again, or export {BEST} if it is intact")
    return run


def read_run_dir(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``run.yaml`` of a run directory that can be resumed.

    Raises:
        LoadError: a file ``--resume`` needs is missing, or ``run.yaml`` does
            not say which model the run started from.
    """
    import yaml

    run = check_resumable(path)
    try:
        info = yaml.safe_load((run / RUN_INFO).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise LoadError(f"{run / RUN_INFO}: not valid YAML") from None
    if not isinstance(info, dict) or not info.get("model"):
        raise LoadError(f"{run / RUN_INFO}: no 'model' entry; resume through the Python API")
    return info


def check_new_run(path: str | os.PathLike[str]) -> None:
    """Refuse to start a run where one already is (a run directory is never replaced)."""
    out = Path(path)
    if (out / LAST).exists():
        raise ConfigError(f"{out}: already holds a run ({LAST}); pass --resume to continue "
                          "it or choose another --out")


def load_resume_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``last.pt`` of the run directory ``path``, to continue it."""
    out = check_resumable(path, needs=(LAST,))
    return load_run_checkpoint(out / LAST)


# -- checkpoint files --------------------------------------------------------
def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename."""
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file ``path`` means: itself, or in a folder ``best.pt``, else
    ``last.pt``, else ``model.pt`` (a post-training conversion).

    Raises:
        LoadError: no such file, or a folder without any of them.
    """
    p = Path(path)
    if p.is_dir():
        for name in FOLDER_CHECKPOINTS:
            if (p / name).is_file():
                return p / name
        raise LoadError(f"{path}: no {', '.join(FOLDER_CHECKPOINTS[:-1])} or "
                        f"{FOLDER_CHECKPOINTS[-1]} in this folder")
    if not p.is_file():
        raise LoadError(f"{path}: no such file")
    return p


def load_run_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a run checkpoint from a file or a folder (see :func:`find_checkpoint`).

    Raises:
        LoadError: one line: missing, unreadable, not a run checkpoint, or
            written by a newer irconvert.
    """
    p = find_checkpoint(path)
    # Empty, truncated and damaged files get the same one-line diagnosis as a
    # user's own checkpoint (weights-only: a run checkpoint never needs code).
    obj = read_checkpoint(p)
    if not is_checkpoint(obj):
        if _holds_weights(obj):
            raise LoadError(f"{p}: a full-precision model, not a binarized run; binarize it "
                            f"first (irconvert binarize {p} --data DATA --out RUN, or "
                            "without --data to convert only), then export the run")
        raise LoadError(f"{p}: not an irconvert run checkpoint (no 'format' marker)")
    return _supported(p, obj)


def _holds_weights(obj: Any) -> bool:
    """Whether ``obj`` looks like a model's weights: a state_dict, or a dict holding one."""
    from irconvert.io.checkpoint_file import CONTAINER_KEYS

    if not isinstance(obj, dict):
        return isinstance(obj, nn.Module)
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return True
    return any(isinstance(obj.get(key), dict | nn.Module) for key in CONTAINER_KEYS)




def _supported(path: Path, obj: dict[str, Any]) -> dict[str, Any]:
    if obj.get("version", 0) > VERSION:
        raise LoadError(f"{path}: checkpoint version {obj['version']} is newer than this "
                        f"irconvert understands ({VERSION}); upgrade irconvert")
    return dict(obj)


def peek_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run checkpoint ``path`` means, or None when it is not one.

    "Is this ours?" for commands that take several kinds of input. A folder
    with ``best.pt``, ``last.pt`` or ``model.pt`` is read as
    :func:`load_run_checkpoint` does (errors included); a ``.pt`` file counts
    when it loads and has the format marker. Anything else (a float
    checkpoint, a model name, a folder without checkpoints) gives None, so
    the caller's next loader can explain what is wrong with it.
    """
    p = Path(path)
    if p.is_dir():
        if not any((p / name).is_file() for name in FOLDER_CHECKPOINTS):
            return None
        return load_run_checkpoint(p)
    if p.suffix != ".pt" or not p.is_file():
        return None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:
        return None  # not ours (or not weights-only): the next loader says what it is
    return _supported(p, obj) if is_checkpoint(obj) else None


def new_checkpoint(
    model: nn.Module, *, arch: str | None, num_classes: int, config: BinarizeConfig,
    source: dict[str, Any] | None = None, **extra: Any,
) -> dict[str, Any]:
    """The dict :func:`atomic_save` writes; ``extra`` holds trainer state."""
    return {
        "format": FORMAT, "version": VERSION, "arch": arch, "num_classes": num_classes,
        "binarize": config.to_dict(), "model": model.state_dict(), "source": source or {},
        **extra,
    }


def model_from_checkpoint(ckpt: dict[str, Any] | str | os.PathLike[str]) -> nn.Module:
    """Rebuild the binarized model a checkpoint holds, in eval mode."""
    data = ckpt if isinstance(ckpt, dict) else load_run_checkpoint(ckpt)
    arch = data.get("arch")
    if not arch:
        raise LoadError("checkpoint has no architecture name; it cannot be rebuilt safely")
    model = build_model(arch, num_classes=int(data["num_classes"]))
    # The layers the saved model binarized, not a fresh decision: a probe at
    # conversion may have kept some (layers the forward pass never calls).
    binary = {k.removesuffix(".ede_t") for k in data["model"] if k.endswith(".ede_t")}
    binarize_(model, BinarizeConfig.from_dict(data["binarize"]), warn=False, layers=binary)
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as exc:
        raise LoadError(f"checkpoint weights do not fit {arch}: "
                        f"{str(exc).splitlines()[0]}") from None
    if data.get("input_size"):  # what the run evaluated on: exports trace at that size
        # a plain attribute (nn.Module's __setattr__ types it as Tensor | Module)
        object.__setattr__(model, "irconvert_input_size",
                           tuple(int(d) for d in data["input_size"]))
    return model.eval()
