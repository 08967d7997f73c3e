"""Key-name signatures of every known architecture, built on the meta device.

Recognizing a bare state_dict means comparing its keys with those of each
candidate architecture. Building a model on the ``meta`` device allocates
nothing, but timm has ~1300 architectures at ~0.2 s each, so signatures are
cached under ``~/.cache/irconvert/`` (``$IRCONVERT_CACHE_DIR`` overrides),
keyed by the library version, and timm candidates are narrowed first by the
stem and classifier names its ``pretrained_cfg`` declares: no model is built
whose first conv or classifier is absent from the state_dict.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from irconvert.atomic import write_text
from irconvert.models.registry import BUILTIN, torchvision_names

__all__ = [
    "GROUPS",
    "Signature",
    "SkipParameterInit",
    "build_on_meta",
    "cache_dir",
    "classifier_key",
    "key_patterns",
    "keys_hash",
    "signatures",
]

GROUPS = ("builtin", "torchvision", "timm")


@dataclass(frozen=True)
class Signature:
    """What identifies an architecture's state_dict, independent of its values."""

    arch: str
    keys_hash: str
    num_keys: int
    classifier: str | None  # key of the classifier weight; its dim 0 is num_classes
    num_classes: int | None  # the architecture's default
    patterns: tuple[str, ...]  # key names with indices as '#', for "closest" ranking

    def to_list(self) -> list[Any]:
        return [self.keys_hash, self.num_keys, self.classifier, self.num_classes,
                list(self.patterns)]

    @classmethod
    def from_list(cls, arch: str, row: list[Any]) -> Signature:
        return cls(arch, str(row[0]), int(row[1]), row[2], row[3], tuple(row[4]))


def weight_keys(state_dict: Iterable[str]) -> list[str]:
    """Keys that must match, in order: BatchNorm's step counter is optional."""
    return [k for k in state_dict if not k.endswith("num_batches_tracked")]


def keys_hash(keys: Iterable[str]) -> str:
    return hashlib.sha1("\n".join(sorted(weight_keys(keys))).encode()).hexdigest()[:16]


def key_patterns(keys: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({re.sub(r"\d+", "#", k) for k in weight_keys(keys)}))


def classifier_key(state_dict: Mapping[str, Tensor]) -> str | None:
    """The last matrix-or-conv weight in module order: the classifier in every zoo model."""
    for key in reversed(list(state_dict)):
        if key.endswith("weight") and state_dict[key].ndim >= 2:
            return key
    return None


def signature_of(arch: str, model: nn.Module) -> Signature:
    sd = model.state_dict()
    cls = classifier_key(sd)
    return Signature(arch, keys_hash(sd), len(weight_keys(sd)), cls,
                     int(sd[cls].shape[0]) if cls else None, key_patterns(sd))


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    # For models whose __init__ computes with tensors (torchvision RegNet's
    # width schedule) and so fails under the meta device: only parameters go
    # to meta, right after creation and before their (then free) init. Patching
    # the class is process-wide, so keep the window short.
    original = nn.Module.register_parameter

    def register(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(self, name, param)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def _factory(arch: str) -> Callable[[int | None], nn.Module]:
    """A builder for a registry name, without the registry's per-call name checks."""
    if arch in BUILTIN:
        return lambda n: BUILTIN[arch](10 if n is None else n)
    if arch.startswith("timm:"):
        import timm

        def build_timm(n: int | None) -> nn.Module:
            kwargs: dict[str, Any] = {} if n is None else {"num_classes": n}
            return timm.create_model(arch[5:], **kwargs)

        return build_timm
    import torchvision

    return lambda n: torchvision.models.get_model(arch, **({} if n is None else {"num_classes": n}))


# In-place ops that change shape or flags must still run on meta tensors.
_KEEP_INPLACE = frozenset({
    "resize_", "resize_as_", "unsqueeze_", "squeeze_", "t_", "transpose_", "set_",
    "as_strided_", "swapdims_", "swapaxes_", "requires_grad_", "share_memory_",
})


class _SkipMetaInit(TorchFunctionMode):
    """Makes weight init on meta tensors free.

    Meta tensors hold no values, yet ``normal_`` and friends still go through
    their decompositions (~3 ms each): most of the time of a meta build.
    """

    def _skip(self, target: Tensor) -> bool:
        return target.is_meta

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.endswith("__") and name not in _KEEP_INPLACE:
            # torch.nn.init passes the tensor by keyword when dispatching.
            target = args[0] if args else kwargs.get("tensor", kwargs.get("input"))
            if isinstance(target, Tensor) and self._skip(target):
                return target
        return func(*args, **kwargs)


class SkipParameterInit(_SkipMetaInit):
    """Skips random init of parameters (not buffers) about to be overwritten by a checkpoint.

    Buffers (running stats, position indices) still initialize normally.
    """

    def _skip(self, target: Tensor) -> bool:
        return isinstance(target, nn.Parameter)


def build_on_meta(arch: str, num_classes: int | None = None) -> nn.Module:
    """Build ``arch`` with no memory for its weights (shapes and keys only)."""
    build = _factory(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"), _SkipMetaInit():
                return build(num_classes)
        except NotImplementedError:  # "Cannot copy out of meta tensor"
            with _parameters_on_meta(), _SkipMetaInit():
                return build(num_classes)


def cache_dir() -> Path:
    return Path(os.environ.get("IRCONVERT_CACHE_DIR") or Path.home() / ".cache" / "irconvert")


def _group_tag(group: str) -> str:
    # importlib.metadata, not an import: reading a cache must not pay for
    # importing timm.
    from importlib.metadata import version

    return group if group == "builtin" else f"{group}-{version(group)}"


def _group_names(group: str) -> list[str]:
    if group == "builtin":
        return list(BUILTIN)
    if group == "torchvision":
        return torchvision_names()
    import timm

    return [f"timm:{n}" for n in timm.list_models()]


_CACHE_FORMAT = 2  # bump when what a signature means changes


def _cache_file(tag: str) -> Path:
    torch_version = torch.__version__.split("+")[0]
    return cache_dir() / f"signatures-v{_CACHE_FORMAT}-{tag}-torch{torch_version}.json"


def _signature_classes(arch: str) -> int | None:
    """Classifier size to build a signature with: timm encoders default to no head.

    Checkpoints worth binarizing have a classifier, so such models (SigLIP,
    AIMv2, ... with ``num_classes=0``) are described with one.
    """
    if not arch.startswith("timm:"):
        return None
    import timm

    cfg = timm.models.get_pretrained_cfg(arch[5:])
    return 1000 if cfg is not None and getattr(cfg, "num_classes", None) == 0 else None


def _read_cache(path: Path) -> dict[str, list[Any] | None]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # absent or damaged: rebuilt as needed


def _write_cache(path: Path, data: Mapping[str, list[Any] | None]) -> None:
    # A read-only or full home must not stop recognition: the cache only saves time.
    with contextlib.suppress(OSError):
        write_text(path, json.dumps(data))


def _cfg_keys(value: Any) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def timm_may_match(name: str, keys: set[str]) -> bool:
    """Cheap pre-check: the model's declared stem and classifier weights are present."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:
        return True
    if cfg is None:
        return True
    first = _cfg_keys(getattr(cfg, "first_conv", None))
    head = _cfg_keys(getattr(cfg, "classifier", None))
    if first and not any(f"{f}.weight" in keys for f in first):
        return False
    if not head or getattr(cfg, "num_classes", 1) == 0:  # encoders ship without a head
        return True
    return any(f"{h}.weight" in keys or f"{h}.bias" in keys for h in head)


def signatures(
    group: str, *, keys: set[str] | None = None, build: bool = True,
) -> dict[str, Signature]:
    """Signatures of a group's architectures (``builtin``, ``torchvision``, ``timm``).

    Args:
        group: which registry.
        keys: the state_dict's keys; for timm, only architectures whose
            declared stem and classifier appear in them are built.
        build: build missing signatures; False returns only cached ones.

    Architectures that cannot be built are skipped (and remembered as such).
    """
    path = _cache_file(_group_tag(group))
    data: dict[str, list[Any] | None] = {} if group == "builtin" else _read_cache(path)
    names = _group_names(group) if build else list(data)
    changed = False
    out: dict[str, Signature] = {}
    for arch in names:
        if arch in data:
            row = data[arch]
        else:
            if not build or (group == "timm" and keys is not None
                             and not timm_may_match(arch[5:], keys)):
                continue
            try:
                model = build_on_meta(arch, _signature_classes(arch))
                row = signature_of(arch, model).to_list()
            except Exception:
                row = None  # an architecture that needs arguments or other packages
            data[arch] = row
            changed = True
        if row is not None:
            out[arch] = Signature.from_list(arch, row)
    if changed and group != "builtin":
        _write_cache(path, data)
    return out
