"""The run checkpoint format shared by the trainer, ``eval`` and ``export``.

A checkpoint is a plain dict saved with ``torch.save`` that loads with
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
from irconvert.errors import LoadError
from irconvert.models import build_model

__all__ = ["FORMAT", "atomic_save", "is_checkpoint", "load_checkpoint", "model_from_checkpoint"]

FORMAT = "irconvert-checkpoint"
VERSION = 1


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename."""
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def is_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a run checkpoint (a file, or a run directory holding ``best.pt``/``last.pt``)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise LoadError(f"{path}: no best.pt or last.pt in this run directory")
    if not p.is_file():
        raise LoadError(f"{path}: no such file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        kind = type(exc).__name__
        raise LoadError(f"{p}: not a readable irconvert checkpoint ({kind})") from None
    if not is_checkpoint(obj):
        raise LoadError(f"{p}: not an irconvert run checkpoint (no 'format' marker)")
    if obj.get("version", 0) > VERSION:
        raise LoadError(f"{p}: checkpoint version {obj['version']} is newer than this "
                        f"irconvert understands ({VERSION}); upgrade irconvert")
    return dict(obj)


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
    data = ckpt if isinstance(ckpt, dict) else load_checkpoint(ckpt)
    arch = data.get("arch")
    if not arch:
        raise LoadError("checkpoint has no architecture name; it cannot be rebuilt safely")
    model = build_model(arch, num_classes=int(data["num_classes"]))
    binarize_(model, BinarizeConfig.from_dict(data["binarize"]), warn=False)
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as exc:
        raise LoadError(f"checkpoint weights do not fit {arch}: "
                        f"{str(exc).splitlines()[0]}") from None
    return model.eval()
