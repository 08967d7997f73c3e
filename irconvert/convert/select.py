"""Which layers to binarize: a decision and a reason for every conv/linear layer.

IR-Net keeps the stem, the classifier and the 1x1 shortcut convolutions in
full precision (spec, "Which layers stay full precision"); depthwise and
grouped convolutions are a known weak spot of binarization. timm's
``pretrained_cfg`` names the stem (``first_conv``) and the classifier; for
other models they are found structurally (first conv, last linear; see
:mod:`irconvert.models.heads`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from irconvert.config import BinarizeConfig
from irconvert.convert.table import LayerMap, is_candidate
from irconvert.models.heads import find_classifier, find_stem
from irconvert.nn import IRLayer

__all__ = ["Decision", "decide"]

# Module-name components that mark a residual shortcut branch in torchvision,
# timm and the usual hand-written ResNets.
_SHORTCUT_WORDS = frozenset({"downsample", "shortcut", "skip", "proj", "short_cut"})


@dataclass(frozen=True)
class Decision:
    """The fate of one layer: ``binarize`` or not, and why."""

    binarize: bool
    reason: str


def _is_shortcut(name: str, module: nn.Module) -> bool:
    if not isinstance(module, nn.Conv2d) or module.kernel_size != (1, 1):
        return False
    words = set(name.split("."))
    return bool(words & _SHORTCUT_WORDS) or max(module.stride) > 1  # type: ignore[type-var]


# Class names of squeeze-and-excitation gates in torchvision (SqueezeExcitation),
# timm (SqueezeExcite, SEModule, EffectiveSEModule, ...) and common user code.
_SE_CLASS = re.compile(r"squeeze.?excit|^(effective)?se(module|layer|block)?$", re.IGNORECASE)


def _se_prefixes(model: nn.Module) -> tuple[str, ...]:
    return tuple(f"{name}." for name, m in model.named_modules()
                 if name and _SE_CLASS.search(type(m).__name__))


def _attention_projections(model: nn.Module) -> frozenset[str]:
    return frozenset(f"{name}.out_proj" if name else "out_proj"
                     for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention))


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def decide(
    model: nn.Module, config: BinarizeConfig, layer_map: LayerMap
) -> dict[str, Decision]:
    """A :class:`Decision` for every conv/linear layer of ``model``, in module order."""
    stem, head = find_stem(model), find_classifier(model)
    se = _se_prefixes(model)
    attention = _attention_projections(model)
    out: dict[str, Decision] = {}
    for name, module in model.named_modules():
        if isinstance(module, IRLayer):
            out[name] = Decision(True, "already binarized")
            continue
        if not is_candidate(module, layer_map):
            continue
        out[name] = _decide_one(name, module, config, layer_map, stem, head,
                                name.startswith(se) if se else False, name in attention)
    return out


def _decide_one(
    name: str, module: nn.Module, config: BinarizeConfig, layer_map: LayerMap,
    stem: set[str], head: set[str], in_se: bool = False, in_attention: bool = False,
) -> Decision:
    if _matches(name, config.exclude):
        return Decision(False, "excluded by pattern")
    # include patterns both restrict and force: a matching layer skips the
    # keep_* defaults (BinarizeConfig docstring), a non-matching one is kept.
    forced = bool(config.include)
    if forced and not _matches(name, config.include):
        return Decision(False, "not matched by include patterns")
    # stem/classifier first: a timm classifier is a timm Linear subclass, and
    # "classifier" says more than "unsupported layer type" there.
    if not forced and config.keep_stem and name in stem:
        return Decision(False, "stem")
    if not forced and config.keep_classifier and name in head:
        return Decision(False, "classifier")
    if in_attention:
        # F.multi_head_attention_forward reads out_proj.weight itself and never
        # calls the module, so a replacement would not run whatever layer_map says.
        return Decision(False, "attention output projection: nn.MultiheadAttention "
                               "reads its weight directly")
    if type(module) not in layer_map:
        kind = type(module)
        return Decision(False, f"unsupported layer type {kind.__module__}.{kind.__qualname__}")
    if getattr(module, "padding_mode", "zeros") != "zeros":
        return Decision(False, f"unsupported padding_mode {module.padding_mode!r}")
    weight = getattr(module, "weight", None)
    if weight is not None and weight.numel() < 2 * weight.shape[0]:
        # Libra-PB's per-channel std needs at least two weights per channel.
        return Decision(False, "one weight per output channel")
    if forced:
        return Decision(True, "included by pattern")
    if config.keep_se and in_se:
        return Decision(False, "squeeze-excite gate")
    if config.keep_downsample and _is_shortcut(name, module):
        return Decision(False, "downsample shortcut")
    groups = getattr(module, "groups", 1)
    if groups > 1:
        depthwise = groups == module.in_channels  # type: ignore[operator]
        if depthwise and config.keep_depthwise:
            return Decision(False, "depthwise")
        if not depthwise and config.keep_grouped:
            return Decision(False, "grouped")
    return Decision(True, "binarized")
