"""Open whatever a user points a command at, as a logits function, and measure it.

``irconvert eval`` takes four kinds of path; :func:`open_any` tells them apart
and opens each with its own loader:

* a run directory or run checkpoint (``best.pt``, ``last.pt``, ``model.pt``):
  :mod:`irconvert.checkpoint` rebuilds the binarized model;
* an exported file (``.irc``, ``.onnx``, OpenVINO ``.xml`` or folder):
  :func:`irconvert.export.runtime.load_predictor` runs it;
* anything else is an original model: :func:`irconvert.io.load_model`.

Each comes back with what it recorded about its input (normalisation, eval
resize/crop). :func:`evaluate_any` adds the data and calls
:func:`irconvert.train.evaluate.evaluate_fn`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from irconvert.checkpoint import load_run_checkpoint, model_from_checkpoint, peek_checkpoint
from irconvert.config import DataConfig
from irconvert.export.formats import is_export
from irconvert.models.heads import model_channels, model_outputs

__all__ = ["OpenedModel", "evaluate_any", "open_any"]


@dataclass
class OpenedModel:
    """A model to evaluate, whatever form it came in.

    Attributes:
        fn: inputs (a batch on ``device``) -> logits.
        kind: ``checkpoint``, ``exported`` or ``original``.
        model: the torch module (None for an exported file).
        channels: input channels it takes.
        outputs: classifier size, when known.
        normalization: ``{"mean": [...], "std": [...]}`` it was trained with,
            when the file records it.
        eval_data: the eval resize/crop it recorded (defaults otherwise).
    """

    fn: Callable[[Tensor], Tensor]
    kind: str
    model: nn.Module | None
    channels: int
    outputs: int | None = None
    normalization: dict[str, Any] | None = None
    eval_data: DataConfig = field(default_factory=DataConfig)


def _eval_fields(data: dict[str, Any] | None) -> DataConfig:
    """The eval resize/crop of a recorded data section (the rest is for training)."""
    recorded = {k: v for k, v in (data or {}).items() if k in ("eval_resize", "eval_crop") and v}
    return DataConfig.from_dict(recorded, "data")


def open_any(path: str | os.PathLike[str], *, device: torch.device | str = "cpu",
             arch: str | None = None, num_classes: int | None = None,
             trust_pickle: bool = False) -> OpenedModel:
    """Open a run directory, run checkpoint, exported file or original model.

    ``arch``, ``num_classes`` and ``trust_pickle`` apply to original models
    (see :func:`irconvert.io.load_model`). Torch models are moved to
    ``device`` in eval mode; exported ones run on the CPU.

    Raises:
        LoadError, ConfigError, MissingDependencyError: one-line reasons.
    """
    p = Path(path)
    dev = torch.device(device)
    if is_export(p):
        return _open_exported(p)
    # A folder is a run directory (or a conversion's): its errors are the ones to show.
    ckpt = load_run_checkpoint(p) if p.is_dir() else peek_checkpoint(p)
    if ckpt is not None:
        model = model_from_checkpoint(ckpt)
        kind, norm = "checkpoint", ckpt.get("normalization")
        eval_data = _eval_fields((ckpt.get("recipe") or {}).get("data"))
    else:
        from irconvert.io import load_model

        model = load_model(str(path), arch=arch, num_classes=num_classes,
                           trust_pickle=trust_pickle).model
        kind, norm, eval_data = "original", None, DataConfig()
    model = model.to(dev).eval()
    return OpenedModel(model, kind, model, model_channels(model), model_outputs(model),
                       norm, eval_data)


def _open_exported(path: Path) -> OpenedModel:
    import numpy as np

    from irconvert.export.runtime import load_predictor

    predictor = load_predictor(path, isolate=True)

    def fn(x: Tensor) -> Tensor:
        return torch.from_numpy(np.asarray(predictor(x.cpu().numpy()))).to(x.device)

    # Exports record the preprocessing of the checkpoint they came from.
    norm = predictor.normalization
    if norm:
        channels = len(norm["mean"])
    elif predictor.input_size and len(predictor.input_size) == 3:
        channels = int(predictor.input_size[0])
    else:
        channels = 3
    return OpenedModel(fn, "exported", None, channels, None, norm,
                       _eval_fields(predictor.preprocessing))


def evaluate_any(path: str, data: str, *, split: str = "auto", batch_size: int = 256,
                 device: str = "cpu", workers: int = 0, arch: str | None = None,
                 num_classes: int | None = None, trust_pickle: bool = False,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 limit: int | None = None, bad_files: str = "stop") -> dict[str, Any]:
    """Top-1/top-5 and loss of whatever :func:`open_any` opens, on ``data``'s eval split.

    Normalisation: ``mean``/``std`` when given, else what the run checkpoint
    or the exported file recorded, else the model's own (ImageNet statistics
    by default; for an export without recorded normalisation the result's
    ``notes`` say so). The eval resize/crop likewise come from the
    checkpoint's recipe or the export's recorded preprocessing. ``limit``
    evaluates an evenly spaced subset of that many images. ``bad_files``:
    ``stop`` at an unreadable image file with an error naming it, or
    ``skip`` it (left out of the numbers, named in ``notes``).

    Returns:
        ``path``, ``kind``, ``data``, ``split``, ``loss``, ``top1``, ``top5``,
        ``images``, ``mean``, ``std``, ``skipped`` (unreadable files left
        out) and ``notes``.

    Raises:
        LoadError, DataError, ConfigError: bad input.
    """
    from torch.utils.data import Subset

    from irconvert.data.datasets import open_data
    from irconvert.data.loaders import (
        AugmentedDataset,
        build_transform,
        make_loader,
        resolve_normalization,
    )
    from irconvert.errors import DataError
    from irconvert.train.evaluate import evaluate_fn
    from irconvert.train.precision import resolve_device

    dev = resolve_device(device)
    opened = open_any(path, device=dev, arch=arch, num_classes=num_classes,
                      trust_pickle=trust_pickle)
    norm, notes = opened.normalization, []
    # --mean/--std say how many channels an export takes when it does not
    channels = len(mean) if mean is not None and opened.model is None else opened.channels
    if opened.kind == "exported" and norm is None and (mean is None or std is None):
        notes.append(f"{path} records no input normalisation (exported by an older "
                     "irconvert or from a checkpoint without one); using ImageNet "
                     "mean/std, pass --mean/--std if the model was trained otherwise")
    bundle = open_data(data, split=split, channels=channels, bad_files=bad_files)
    if opened.outputs is not None and opened.outputs != bundle.num_classes:
        raise DataError(f"{path}: the model has {opened.outputs} outputs but {bundle.name} "
                        f"has {bundle.num_classes} classes")
    if mean is not None and std is not None:
        m, s = tuple(mean), tuple(std)
    elif norm:
        m, s = tuple(norm["mean"]), tuple(norm["std"])
    else:
        m, s = resolve_normalization(DataConfig(), opened.model, channels)
    val = bundle.val
    if limit is not None and limit < len(val):  # type: ignore[arg-type]
        step = len(val) / limit  # type: ignore[arg-type]
        val = Subset(val, [int(i * step) for i in range(limit)])
    tf = build_transform(opened.eval_data, m, s, train=False)
    loader = make_loader(AugmentedDataset(val, tf), batch_size=batch_size, train=False,
                         seed=0, workers=workers, pin_memory=dev.type == "cuda")
    result = evaluate_fn(opened.fn, loader, dev)
    skipped = bundle.bad_paths()
    if skipped:
        shown = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more"
                                          if len(skipped) > 3 else "")
        notes.append(f"left out {len(skipped)} unreadable image file(s): {shown}")
    return {"path": str(path), "kind": opened.kind, "data": bundle.name,
            "split": bundle.val_split, **result.to_dict(), "mean": list(m), "std": list(s),
            "skipped": skipped, "notes": notes}
