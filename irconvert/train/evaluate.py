"""Evaluation: loss, top-1 and top-5 of a model (or any logits function) on a loader."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from irconvert.errors import LoadError
from irconvert.train.distributed import DistEnv, all_reduce_sum
from irconvert.train.metrics import correct_topk

__all__ = ["EvalResult", "evaluate", "evaluate_fn"]


@dataclass(frozen=True)
class EvalResult:
    loss: float
    top1: float
    top5: float
    images: int

    def to_dict(self) -> dict[str, float | int]:
        return {"loss": self.loss, "top1": self.top1, "top5": self.top5, "images": self.images}


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


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
            with _autocast(device, amp):
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


def _is_exported(p: Any) -> bool:
    from irconvert.export.runtime import detect_format

    try:
        detect_format(p)
    except LoadError:
        return False
    return True


def evaluate_source(path: str, data: str, *, split: str = "auto", batch_size: int = 256,
                    device: str = "cpu", workers: int = 0, arch: str | None = None,
                    num_classes: int | None = None, trust_pickle: bool = False,
                    mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                    limit: int | None = None) -> dict[str, Any]:
    """Top-1/top-5 of a run checkpoint, an exported model or an original model.

    ``path`` is a run directory or ``.pt`` run checkpoint (rebuilt with
    :func:`irconvert.checkpoint.model_from_checkpoint`), an ``.irc``/``.onnx``/
    OpenVINO export (run with :func:`irconvert.export.runtime.load_predictor`),
    or anything :func:`irconvert.io.load_model` takes. Normalisation: ``mean``/
    ``std`` when given, else what the run checkpoint or the exported file
    recorded, else the model's own (ImageNet statistics by default; for an
    export without recorded normalisation the result's ``notes`` say so).
    The eval resize/crop likewise come from the checkpoint's recipe or the
    export's recorded preprocessing.

    Raises:
        LoadError, DataError, ConfigError: bad input.
    """
    from pathlib import Path

    import numpy as np
    from torch.utils.data import Subset

    from irconvert.checkpoint import is_checkpoint, load_checkpoint, model_from_checkpoint
    from irconvert.convert.heads import model_channels, model_outputs
    from irconvert.data.datasets import open_data
    from irconvert.data.loaders import (
        AugmentedDataset,
        build_transform,
        make_loader,
        resolve_normalization,
    )
    from irconvert.errors import DataError
    from irconvert.train.recipe import DataConfig
    from irconvert.train.trainer import resolve_device

    dev = resolve_device(device)
    p = Path(path)
    model: nn.Module | None = None
    fn: Callable[[Tensor], Tensor]
    norm: dict[str, Any] | None = None
    data_cfg = DataConfig()
    kind = "original"
    notes: list[str] = []
    if _is_exported(p):
        from irconvert.export.runtime import load_predictor

        predictor = load_predictor(p)
        kind = "exported"

        def fn(x: Tensor) -> Tensor:
            return torch.from_numpy(np.asarray(predictor(x.cpu().numpy()))).to(x.device)

        # Exports record the preprocessing of the checkpoint they came from;
        # --mean/--std override it (and say how many channels).
        recorded = predictor.preprocessing or {}
        norm = predictor.normalization
        resize = {k: recorded[k] for k in ("eval_resize", "eval_crop") if recorded.get(k)}
        if resize:
            data_cfg = DataConfig.from_dict(resize)
        if mean is not None:
            channels = len(mean)
        elif norm:
            channels = len(norm["mean"])
        elif predictor.input_size and len(predictor.input_size) == 3:
            channels = int(predictor.input_size[0])
        else:
            channels = 3
        if norm is None and (mean is None or std is None):
            notes.append(f"{path} records no input normalisation (exported by an older "
                         "irconvert or from a checkpoint without one); using ImageNet "
                         "mean/std, pass --mean/--std if the model was trained otherwise")
    else:
        ckpt = None
        if p.is_dir() or (p.is_file() and p.suffix == ".pt"):
            obj = load_checkpoint(p) if p.is_dir() else None
            if obj is None:
                try:
                    raw = torch.load(p, map_location="cpu", weights_only=True)
                except Exception:
                    raw = None
                obj = raw if is_checkpoint(raw) else None
            ckpt = obj
        if ckpt is not None:
            model = model_from_checkpoint(ckpt)
            norm = ckpt.get("normalization")
            recipe = ckpt.get("recipe") or {}
            if recipe.get("data"):
                data_cfg = DataConfig.from_dict(
                    {k: v for k, v in recipe["data"].items() if k.startswith("eval_")})
            kind = "checkpoint"
        else:
            from irconvert.io import load_model

            model = load_model(str(path), arch=arch, num_classes=num_classes,
                               trust_pickle=trust_pickle).model
        model = model.to(dev).eval()
        fn = model
        channels = model_channels(model)
    bundle = open_data(data, split=split, channels=channels)
    if model is not None:
        outputs = model_outputs(model)
        if outputs is not None and outputs != bundle.num_classes:
            raise DataError(f"{path}: the model has {outputs} outputs but {bundle.name} has "
                            f"{bundle.num_classes} classes")
    if mean is not None and std is not None:
        m, s = tuple(mean), tuple(std)
    elif norm:
        m, s = tuple(norm["mean"]), tuple(norm["std"])
    else:
        m, s = resolve_normalization(DataConfig(), model, channels)
    val = bundle.val
    if limit is not None and limit < len(val):  # type: ignore[arg-type]
        step = len(val) / limit  # type: ignore[arg-type]
        val = Subset(val, [int(i * step) for i in range(limit)])
    tf = build_transform(data_cfg, m, s, train=False)
    loader = make_loader(AugmentedDataset(val, tf), batch_size=batch_size, train=False,
                         seed=0, workers=workers, pin_memory=dev.type == "cuda")
    result = evaluate_fn(fn, loader, dev)
    return {"path": str(path), "kind": kind, "data": bundle.name, "split": bundle.val_split,
            **result.to_dict(), "mean": list(m), "std": list(s), "notes": notes}
