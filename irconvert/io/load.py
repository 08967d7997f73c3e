"""``load_model``: a full-precision model from a name or any checkpoint form."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from irconvert.errors import LoadError
from irconvert.io.checkpoint_file import file_sha256, load_state_dict_file
from irconvert.io.recognize import Recognition, recognize_detailed, shape_mismatches
from irconvert.io.signatures import (
    SkipParameterInit,
    build_on_meta,
    classifier_key,
    weight_keys,
)
from irconvert.models.offline import hub_offline_if_unreachable
from irconvert.models.registry import ALIASES, build_model

__all__ = ["CHECKPOINT_SUFFIXES", "LoadedModel", "fit_state_dict", "load_model"]

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".th", ".bin", ".ckpt", ".tar", ".safetensors")
_SHOW = 3  # keys named in a mismatch message


@dataclass
class LoadedModel:
    """A full-precision model ready to binarize, and where it came from.

    Attributes:
        model: in eval mode, float32, on the CPU.
        arch: registry name that rebuilds it (``cifar_resnet20``, ``resnet18``,
            ``timm:resnet18``); None for a pickled module of unknown class.
        num_classes: classifier size, when there is a classifier.
        source: what the user passed.
        sha256: of the file, when the source is a file.
        meta: ``format``, ``recognized``, ``extra_keys``, ``alternatives``, ...
    """

    model: nn.Module
    arch: str | None
    num_classes: int | None
    source: str
    sha256: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _few(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def fit_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], arch: str) -> int:
    """Load ``state_dict`` into ``model`` strictly, except for ``num_batches_tracked``.

    Returns the number of tensors loaded.

    Raises:
        LoadError: naming the first missing, unexpected or mis-shaped keys.
    """
    own = model.state_dict()
    missing = [k for k in weight_keys(own) if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    bad_shapes = shape_mismatches(state_dict, own)
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if bad_shapes:
        problems.append(f"shape {_few(bad_shapes)}")
    if problems:
        raise LoadError(f"the checkpoint does not fit {arch}: {'; '.join(problems)}; "
                        "check --arch (or omit it to recognize the architecture)")
    # Old checkpoints lack the BatchNorm step counter; the model keeps its own.
    model.load_state_dict(dict(state_dict), strict=False)
    return len(state_dict)


def _classes_of(state_dict: Mapping[str, Tensor]) -> int | None:
    key = classifier_key(state_dict)
    return int(state_dict[key].shape[0]) if key else None


def _check_classes(found: int | None, asked: int | None) -> None:
    if asked is not None and found is not None and asked != found:
        raise LoadError(f"the checkpoint has {found} classes, --num-classes says {asked}; "
                        "drop --num-classes (to train a new classifier for data with "
                        f"another number of classes, pass --replace-classifier instead) "
                        "or pass the matching checkpoint")


def _finish(model: nn.Module) -> nn.Module:
    return model.float().cpu().eval()


def _from_state_dict(
    sd: dict[str, Tensor], arch: str | None, num_classes: int | None, meta: dict[str, Any],
) -> tuple[nn.Module, str, int | None]:
    if arch is None:
        found: Recognition = recognize_detailed(sd)
        name, ckpt_classes = found.arch, found.num_classes
        meta.update(recognized=True, alternatives=found.alternatives)
    else:
        name = ALIASES.get(arch, arch)
        # The classifier key depends on the architecture, not on the file's key order
        # (safetensors sorts keys), so read it from an empty build.
        ckpt_classes = _classifier_rows(name, sd)
        meta["recognized"] = False
    _check_classes(ckpt_classes, num_classes)
    # Every parameter is about to be overwritten (fit_state_dict checks), so
    # random init would only cost time: seconds for large timm models.
    with SkipParameterInit():
        model = build_model(name, num_classes=ckpt_classes)
    meta["loaded_tensors"] = fit_state_dict(model, sd, name)
    meta["model_tensors"] = len(weight_keys(model.state_dict()))
    return model, name, ckpt_classes


def _classifier_rows(arch: str, sd: Mapping[str, Tensor]) -> int | None:
    try:
        key = classifier_key(build_on_meta(arch).state_dict())
    except Exception as exc:
        build_model(arch)  # unknown names get the registry's did-you-mean error
        raise LoadError(f"could not build {arch}: {exc}".splitlines()[0]) from None
    return int(sd[key].shape[0]) if key is not None and key in sd else None


def _from_module(
    model: nn.Module, num_classes: int | None, meta: dict[str, Any],
) -> tuple[nn.Module, str | None, int | None]:
    sd = model.state_dict()
    classes = _classes_of(sd)
    _check_classes(classes, num_classes)
    arch = None
    # A pickled zoo model can be named, so runs can rebuild it without pickle;
    # only when the rebuilt class is the same one, not just the same keys.
    if type(model).__module__.split(".")[0] in ("torchvision", "timm", "irconvert"):
        try:
            found = recognize_detailed(sd)
            if type(build_on_meta(found.arch, found.num_classes)) is type(model):
                arch = found.arch
        except Exception:
            arch = None
    meta["recognized"] = arch is not None
    return model, arch, classes


def _looks_like_path(source: str) -> bool:
    return (os.sep in source or "/" in source or source.startswith(".")
            or source.lower().endswith(CHECKPOINT_SUFFIXES))


def load_model(
    source: str,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    pretrained: bool = False,
    trust_pickle: bool = False,
) -> LoadedModel:
    """Load a full-precision model from a name or a checkpoint file.

    Args:
        source: a checkpoint (``.pth``/``.pt``/``.th``/``.bin``/``.safetensors``:
            a state_dict, a training checkpoint holding one, or, with
            ``trust_pickle``, a pickled module) or a model name (``cifar_resnet20``,
            ``resnet18``, ``timm:resnet18``).
        arch: architecture of a bare state_dict; recognized from its keys when None.
        num_classes: classifier size; read from the checkpoint when None, and an
            error when it disagrees with the checkpoint.
        pretrained: for a name, download its pretrained weights.
        trust_pickle: allow checkpoints that need code execution to load.

    Returns:
        A :class:`LoadedModel` in eval mode, float32, on the CPU.

    Raises:
        LoadError: the file is unreadable, does not fit, or needs ``trust_pickle``.
        UnknownArchitectureError: an unknown name, or a state_dict no known
            architecture fits.

    Example:
        >>> loaded = load_model("resnet20-12fca82f.th")  # doctest: +SKIP
        >>> loaded.arch, loaded.num_classes
        ('cifar_resnet20', 10)
    """
    path = Path(source)
    if not path.exists() and not _looks_like_path(source):
        guard = hub_offline_if_unreachable() if pretrained else contextlib.nullcontext()
        with guard:
            model = build_model(source, num_classes=num_classes, pretrained=pretrained)
        return LoadedModel(_finish(model), ALIASES.get(source, source),
                           _classes_of(model.state_dict()), source,
                           meta={"format": "name", "recognized": False, "extra_keys": {},
                                 "pretrained": pretrained})
    if pretrained:
        raise LoadError("--pretrained applies to model names, not checkpoint files; drop it")
    weights, info = load_state_dict_file(path, trust_pickle=trust_pickle)
    name: str | None
    meta: dict[str, Any] = dict(info)
    if isinstance(weights, nn.Module):
        if arch is not None:
            meta["arch_ignored"] = arch  # the pickled module is its own architecture
        model, name, classes = _from_module(weights, num_classes, meta)
    else:
        _floats_only(weights, path)
        model, name, classes = _from_state_dict(weights, arch, num_classes, meta)
    with torch.no_grad():
        model = _finish(model)
    return LoadedModel(model, name, classes, source, file_sha256(path), meta)


def _floats_only(sd: Mapping[str, Tensor], path: Path) -> None:
    # A quantized or packed checkpoint would load "successfully" into garbage.
    odd = [k for k, v in sd.items() if v.is_quantized]
    if odd:
        raise LoadError(f"{path} holds quantized tensors ({_few(odd)}); "
                        "irconvert needs the full-precision model")
