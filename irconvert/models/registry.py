"""Model names -> factories: built-in CIFAR models, torchvision, timm (``timm:``)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from irconvert.errors import LoadError, UnknownArchitectureError
from irconvert.models import cifar, digits
from irconvert.models.heads import model_outputs, replace_classifier_

__all__ = ["BUILTIN", "build_model", "builtin_names", "torchvision_names"]

BUILTIN: dict[str, Callable[[int], nn.Module]] = {
    "cifar_resnet20": functools.partial(cifar.cifar_resnet, 20),
    "cifar_resnet32": functools.partial(cifar.cifar_resnet, 32),
    "cifar_resnet44": functools.partial(cifar.cifar_resnet, 44),
    "cifar_resnet56": functools.partial(cifar.cifar_resnet, 56),
    **{f"irnet_resnet{d}": functools.partial(cifar.cifar_resnet, d, head_bn=True)
       for d in (20, 32, 44, 56)},
    "cifar_resnet18": cifar.cifar_resnet18,
    "vgg_small": cifar.vgg_small,
    "digits_cnn": digits.digits_cnn,
}
# Short names that no torchvision model uses.
ALIASES = {f"resnet{d}": f"cifar_resnet{d}" for d in (20, 32, 44, 56)}



def builtin_names() -> list[str]:
    return list(BUILTIN)


@functools.lru_cache(maxsize=1)
def torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def _closest(name: str, options: list[str]) -> str:
    import difflib

    near = difflib.get_close_matches(name, options, n=5, cutoff=0.5)
    return f"; did you mean {', '.join(near)}?" if near else ""


def build_model(name: str, num_classes: int | None = None, pretrained: bool = False) -> nn.Module:
    """Build a model by name.

    Args:
        name: a built-in name (``cifar_resnet20``, ``vgg_small``, ...), a
            torchvision name (``resnet18``) or a timm name (``timm:resnet18``).
        num_classes: classifier size; the architecture's default when None.
        pretrained: download pretrained weights (needs internet).

    Raises:
        UnknownArchitectureError: the name is not known.
        LoadError: pretrained weights could not be downloaded.
    """
    name = ALIASES.get(name, name)
    if name.startswith("timm:"):
        return _build_timm(name[5:], num_classes, pretrained)
    if name in BUILTIN:
        if pretrained:
            raise LoadError(f"no pretrained weights ship for built-in model {name!r}; "
                            "pass a checkpoint file instead")
        return BUILTIN[name](10 if num_classes is None else num_classes)
    if name in torchvision_names():
        return _build_torchvision(name, num_classes, pretrained)
    options = builtin_names() + list(ALIASES) + torchvision_names()
    raise UnknownArchitectureError(
        f"unknown architecture {name!r}{_closest(name, options)} "
        "(timm models take a 'timm:' prefix)"
    )


def _download_error(what: str, exc: Exception | str) -> LoadError:
    """One line: what could not be downloaded, why (its first sentence), and what to do."""
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    first = re.split(r"(?<=[.!?])\s", " ".join(text.split()), maxsplit=1)[0]
    why = first if len(first) <= 160 else first[:157].rsplit(" ", 1)[0] + "..."
    return LoadError(f"could not download pretrained weights for {what} (offline?): "
                     f"{why.rstrip('.')}; download them where there is internet and pass the "
                     f"file instead (irconvert binarize WEIGHTS.pth --arch {what} ...)")


def _torchvision_weights_reachable(name: str) -> str | None:
    """Why torchvision could not fetch ``name``'s weights here, or None (cached or online).

    torchvision prints "Downloading: URL" before it finds out that it is
    offline; a cached file, or a host that resolves, lets it go ahead.
    """
    from urllib.parse import urlparse

    import torch
    import torchvision

    from irconvert.models.offline import host_resolves

    try:
        url = torchvision.models.get_model_weights(name).DEFAULT.url  # type: ignore[attr-defined]
    except (ValueError, AttributeError):
        return None  # let torchvision say what it makes of the name
    parts = urlparse(url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(parts.path).name
    if cached.is_file() or host_resolves(parts.hostname or ""):
        return None
    return f"{parts.hostname} cannot be reached and {cached.name} is not in the torch hub cache"


def _build_torchvision(name: str, num_classes: int | None, pretrained: bool) -> nn.Module:
    import torchvision

    kwargs: dict[str, object] = {}
    if pretrained:
        kwargs["weights"] = "DEFAULT"
        unreachable = _torchvision_weights_reachable(name)
        if unreachable is not None:
            raise _download_error(name, unreachable)
        try:
            model = torchvision.models.get_model(name, **kwargs)
        except Exception as exc:  # URLError, HTTPError, OSError, ...
            raise _download_error(name, exc) from exc
        if num_classes is not None:
            _replace_classifier(model, num_classes)
        return model
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return torchvision.models.get_model(name, **kwargs)


def _build_timm(name: str, num_classes: int | None, pretrained: bool) -> nn.Module:
    import timm

    if not timm.list_models(name) and name not in timm.list_models():
        raise UnknownArchitectureError(
            f"unknown timm architecture {name!r}{_closest(name, timm.list_models())}"
        )
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as exc:
        if pretrained:
            raise _download_error(f"timm:{name}", exc) from exc
        raise


def _replace_classifier(model: nn.Module, num_classes: int) -> None:
    if model_outputs(model) != num_classes:
        replace_classifier_(model, num_classes)
