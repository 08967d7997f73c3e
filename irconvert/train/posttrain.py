"""Post-training binarization: convert a model without fine-tuning it.

Without data this is conversion only: the checkpoint it writes exports and
shows the real size of the binary model, but its accuracy is near chance
until it is fine-tuned. With data, BatchNorm statistics are re-estimated
(the float ones describe layers that no longer exist) and the validation
accuracy of the result is measured: the honest "epoch 0" of a fine-tuning run.

The checkpoint is an ordinary run checkpoint (:mod:`irconvert.checkpoint`)
plus ``posttrain`` (what was done) and ``origin`` (how to reload the
full-precision model, so ``irconvert binarize CHECKPOINT --data ...`` can
fine-tune from the original).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from irconvert.checkpoint import atomic_save, new_checkpoint, peek_checkpoint
from irconvert.config import BinarizeConfig, TrainConfig
from irconvert.convert import ConversionReport, binarize_
from irconvert.errors import DataError, LoadError
from irconvert.outputs import POSTTRAIN, resolve_output

if TYPE_CHECKING:
    from irconvert.train.evaluate import EvalResult

__all__ = [
    "DEFAULT_BN_BATCHES",
    "PostTrainResult",
    "origin_of",
    "post_train",
]

# BatchNorm must be re-estimated for a post-trained model to be usable at all,
# so a recipe's bn_recalibration of 0 (its "off", meant for fine-tuning runs
# that adapt BatchNorm anyway) means this many batches here.
DEFAULT_BN_BATCHES = 100


@dataclass
class PostTrainResult:
    """What :func:`post_train` did and wrote.

    ``fp``/``binary`` (an :class:`~irconvert.train.evaluate.EvalResult`) are
    None without data; ``bn_batches`` is the number of training batches
    BatchNorm was re-estimated on; ``thresholds`` the number of layers whose
    activation threshold was set from data; ``skipped`` the unreadable image
    files left out (``data.bad_files: skip``).
    """

    path: Path
    source: str
    arch: str
    report: ConversionReport
    data: str | None = None
    split: str | None = None
    fp: EvalResult | None = None
    binary: EvalResult | None = None
    bn_batches: int = 0
    thresholds: int = 0
    skipped: list[str] = field(default_factory=list)


def _source_id(source: str) -> str:
    # Record files absolutely: the checkpoint may be used from another folder.
    p = Path(source)
    return str(p.resolve()) if p.exists() else source


def origin_of(path: str | os.PathLike[str]) -> tuple[dict[str, Any], TrainConfig] | None:
    """For a post-training checkpoint (or its folder): how to load its original model,
    and its recipe.

    Returns None for anything else (a model name, a float checkpoint...).
    """
    p = Path(path)
    if p.is_dir():  # a folder a conversion was written into
        p = p / POSTTRAIN
    obj = peek_checkpoint(p)  # None when not ours: the ordinary loader explains
    if obj is None or not isinstance(obj.get("origin"), dict):
        return None
    from irconvert.config.recipe_file import recipe_from_dict

    origin = dict(obj["origin"])
    model = Path(str(origin.get("model", "")))
    if model.is_absolute():
        from irconvert.io.checkpoint_file import file_sha256

        if not model.is_file():
            raise LoadError(f"{p} was converted from {model}, which no longer exists; "
                            "give the full-precision model instead")
        sha = (obj.get("source") or {}).get("sha256")
        if sha and file_sha256(model) != sha:
            raise LoadError(f"{p} was converted from {model}, which has changed since; "
                            "give the full-precision model instead")
    recipe = recipe_from_dict(obj.get("recipe") or {"binarize": obj["binarize"]}, str(p))
    return origin, recipe


def post_train(
    source: str, out: str | os.PathLike[str] | None = None, *,
    recipe: TrainConfig | BinarizeConfig | None = None, data: str | None = None,
    arch: str | None = None, num_classes: int | None = None, pretrained: bool = False,
    trust_pickle: bool = False, download: bool = False, force: bool = False,
    bn_batches: int | None = None, evaluate_fp: bool = True,
) -> PostTrainResult:
    """Binarize ``source`` without training and write a run checkpoint.

    Args:
        source: anything :func:`irconvert.io.load_model` takes.
        out: a folder (``model.pt`` is written in it) or a ``.pt`` path;
            default ``runs/<stem>-1w1a/model.pt`` in a folder not yet taken.
        recipe: binarize settings (a :class:`BinarizeConfig`), or a whole
            recipe, whose ``data``, ``batch_size``, ``workers``, ``device``,
            ``seed``, ``amp`` and ``bn_recalibration`` apply with ``data``.
        data: a data spec; when given, BatchNorm is re-estimated on its
            training split and both models are evaluated on its validation split.
        bn_batches: batches for BatchNorm (default: the recipe's
            ``bn_recalibration``, else :data:`DEFAULT_BN_BATCHES`; 0: off).
        evaluate_fp: also evaluate the full-precision model (with ``data``).
        force: replace an existing checkpoint at ``out``.

    Raises:
        LoadError, DataError, ConfigError, ConversionError: one-line reasons.
    """
    from irconvert.io import load_model
    from irconvert.models.heads import model_channels, model_outputs

    if recipe is None or isinstance(recipe, BinarizeConfig):
        recipe = TrainConfig(binarize=recipe or BinarizeConfig())
    if data is not None:  # a typo in --data must not wait for a model download
        _check_data(data, download)
    target = resolve_output(out, source, recipe.binarize.act_bits, force)
    loaded = load_model(source, arch=arch, num_classes=num_classes, pretrained=pretrained,
                        trust_pickle=trust_pickle)
    if loaded.arch is None:
        raise LoadError(f"{source}: a pickled {type(loaded.model).__name__} that irconvert "
                        "cannot rebuild by name, so no checkpoint of it could be exported; "
                        "save its state_dict and pass --arch")
    model, channels = loaded.model, model_channels(loaded.model)
    classes = loaded.num_classes or model_outputs(model)
    if classes is None:
        raise LoadError(f"{source}: no classifier found to read the class count from; "
                        "pass --num-classes")
    extra: dict[str, Any] = {}
    if data is None:
        from irconvert.data.loaders import resolve_normalization

        result = PostTrainResult(target, source, loaded.arch,
                                 binarize_(model, recipe.binarize, warn=False))
        mean, std = resolve_normalization(recipe.data, model, channels)
    else:
        result, mean, std, names = _with_data(model, data, recipe, target, source, loaded.arch,
                                              channels, download, bn_batches, evaluate_fp)
        extra["classes"] = names
    binary = result.binary.to_dict() if result.binary is not None else None
    ckpt = new_checkpoint(
        model.cpu(), arch=loaded.arch, num_classes=int(classes), config=recipe.binarize,
        source={"path": loaded.source, "sha256": loaded.sha256},
        recipe=recipe.to_dict(), report=result.report.to_dict(),
        normalization={"mean": list(mean), "std": list(std)}, epoch=0,
        metrics={"best_top1": binary["top1"] if binary else None,
                 "fp": result.fp.to_dict() if result.fp is not None else None},
        posttrain={"data": data, "split": result.split, "bn_batches": result.bn_batches,
                   "thresholds": result.thresholds, "binary": binary},
        origin={"model": _source_id(source), "arch": loaded.arch, "num_classes": num_classes,
                "pretrained": pretrained, "trust_pickle": trust_pickle},
        **extra)
    atomic_save(ckpt, target)
    return result


def _check_data(data: str, download: bool) -> None:
    from irconvert.data.datasets import parse_data_spec

    spec = parse_data_spec(data)
    if spec.kind != "digits" and not download and not spec.root.exists():
        raise DataError(f"{spec.root}: data folder not found")


def _with_data(model: nn.Module, data: str, recipe: TrainConfig, target: Path, source: str,
               arch: str, channels: int, download: bool, bn_batches: int | None,
               evaluate_fp: bool) -> tuple[PostTrainResult, Any, Any, list[str]]:
    """Binarize, calibrate on ``data``'s training split, evaluate on its validation split."""
    from irconvert.data.datasets import first_image, open_data
    from irconvert.data.loaders import (
        AugmentedDataset,
        build_transform,
        make_loader,
        resolve_normalization,
    )
    from irconvert.models.heads import model_outputs
    from irconvert.train.bn import recalibrate_bn
    from irconvert.train.evaluate import evaluate
    from irconvert.train.precision import resolve_device

    bundle = open_data(data, channels=channels, download=download,
                       bad_files=recipe.data.bad_files)
    image = first_image(bundle.val)
    if image is None:
        raise DataError(f"{bundle.name}: no readable image in the {bundle.val_split} split")
    bands = getattr(image, "getbands", lambda: ())()
    if bands and len(bands) != channels:  # the digits are grayscale whatever is asked
        raise DataError(f"{bundle.name} has {len(bands)}-channel images but the model takes "
                        f"{channels}-channel input")
    outputs = model_outputs(model)
    if outputs is not None and outputs != bundle.num_classes:
        raise DataError(f"the model has {outputs} outputs but {bundle.name} has "
                        f"{bundle.num_classes} classes; post-training cannot learn a new "
                        "classifier: fine-tune with --epochs N --replace-classifier")
    steps = (recipe.bn_recalibration or DEFAULT_BN_BATCHES) if bn_batches is None else bn_batches
    if steps > 0 and bundle.train is None:
        raise DataError(f"{bundle.name}: no train/ split to re-estimate BatchNorm on")
    device = resolve_device(recipe.device)
    mean, std = resolve_normalization(recipe.data, model, channels)
    # Statistics for evaluation: the training images as evaluation sees them
    # (no augmentation), in a shuffled order so the batches are representative.
    tf = build_transform(recipe.data, mean, std, train=False)
    common: dict[str, Any] = {
        "batch_size": recipe.batch_size, "seed": recipe.seed, "workers": recipe.workers,
        "pin_memory": recipe.data.pin_memory and device.type == "cuda"}
    val_loader = make_loader(AugmentedDataset(bundle.val, tf), train=False, **common)
    model.to(device)
    fp = evaluate(model, val_loader, device, amp=recipe.amp) if evaluate_fp else None
    result = PostTrainResult(target, source, arch,
                             binarize_(model, recipe.binarize, warn=False),
                             data=bundle.name or data, split=bundle.val_split, fp=fp)
    if bundle.train is not None and steps > 0:
        train_loader = make_loader(AugmentedDataset(bundle.train, tf, seed=recipe.seed),
                                   train=True, **common)
        if getattr(recipe.binarize, "act_threshold", False):
            from irconvert.nn.thresholds import init_act_thresholds

            result.thresholds = init_act_thresholds(model, train_loader, max(steps, 10),
                                                    device)
        result.bn_batches = recalibrate_bn(model, train_loader, steps, device)
    result.binary = evaluate(model, val_loader, device, amp=recipe.amp)
    result.skipped = list(bundle.bad_paths())
    return result, mean, std, list(bundle.classes)
