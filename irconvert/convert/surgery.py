"""Module surgery: swap float conv/linear layers for IR-Net layers in place."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

from torch import nn
from torch.nn.parameter import is_lazy

from irconvert.config import BinarizeConfig
from irconvert.convert.probe import input_channels, nonnegative_inputs
from irconvert.convert.report import ConversionReport, LayerRow, model_sizes
from irconvert.convert.select import Decision, decide
from irconvert.convert.table import DEFAULT_LAYER_MAP, LayerMap
from irconvert.errors import ConversionError
from irconvert.nn import IRLayer, RPReLU

__all__ = ["BlockTransform", "binarize", "binarize_", "enable_act_thresholds_", "plan",
           "unbinarize_"]

RELU_WARNING = (
    "input is always >= 0 (a ReLU-like output), so every activation bit is +1; "
    "rewrite the block (block_transform, for ResNet blocks), exclude the layer, or use 1W/32A"
)

# A block transform rewrites residual blocks in place and returns the names of
# those it changed; irconvert.convert.blocks registers the built-in ones.
BlockTransform = Callable[[nn.Module], list[str]]
BLOCK_TRANSFORMS: list[BlockTransform] = []


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _check_initialized(model: nn.Module) -> None:
    lazy = [n for n, p in model.named_parameters() if is_lazy(p)]
    if lazy:
        raise ConversionError(
            f"parameter {lazy[0]!r} is uninitialized (a lazy module); "
            "run one forward pass before binarizing"
        )


def _transform_blocks(model: nn.Module, config: BinarizeConfig) -> list[str]:
    if not config.transforms_blocks:
        return []
    changed: list[str] = []
    for transform in BLOCK_TRANSFORMS:
        changed.extend(transform(model))
    if changed and config.block_act == "rprelu":
        _hardtanh_to_rprelu(model)
    return changed


def _hardtanh_to_rprelu(model: nn.Module) -> list[str]:
    """Replace each Hardtanh that always sees one channel count by an ``RPReLU``.

    The channel count comes from a forward probe, so any block form works; a
    Hardtanh shared between tensors of different widths (VGG-Small's single
    ``nonlinear``) cannot hold per-channel parameters and is left alone.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Hardtanh) and n]
    seen = input_channels(model, set(names))
    replaced = []
    for name in names:
        widths = seen.get(name, set())
        if len(widths) == 1:
            _set_submodule(model, name, RPReLU(widths.pop()).to(_device_of(model)))
            replaced.append(name)
    return replaced


def _device_of(model: nn.Module) -> Any:
    param = next(model.parameters(), None)
    return param.device if param is not None else "cpu"


def enable_act_thresholds_(model: nn.Module) -> int:
    """Give every binary-input IR-Net layer a learnable threshold (zeros until calibrated)."""
    count = 0
    for module in model.modules():
        if isinstance(module, IRLayer) and module.binary_act and module.act_threshold is None:
            module.enable_act_threshold()
            count += 1
    return count


def _build_report(
    model: nn.Module, config: BinarizeConfig, decisions: dict[str, Decision], blocks: list[str],
    probe: bool = True,
) -> ConversionReport:
    modules = dict(model.named_modules())
    chosen = {n for n, d in decisions.items() if d.binarize}
    flagged: set[str] = set()
    if probe and config.binary_activations:
        flagged = nonnegative_inputs(model, chosen) or set()
    rows = []
    for name, decision in decisions.items():
        module = modules[name]
        weight = getattr(module, "weight", None)
        rows.append(LayerRow(
            name=name,
            type=type(module).__name__,
            shape=list(weight.shape) if weight is not None else [],
            params=sum(p.numel() for p in module.parameters(recurse=False)),
            binarize=decision.binarize,
            reason=decision.reason,
            warning=RELU_WARNING if name in flagged else None,
        ))
    total, n_bin, fp32, packed = model_sizes(model, chosen)
    return ConversionReport(
        act_bits=config.act_bits, rows=rows, blocks=blocks, total_params=total,
        binarized_params=n_bin, fp32_bytes=fp32, packed_bytes=packed,
    )


def plan(
    model: nn.Module, config: BinarizeConfig | None = None,
    layer_map: LayerMap = DEFAULT_LAYER_MAP,
) -> ConversionReport:
    """Dry run: what :func:`binarize_` would do to ``model``, which is not changed."""
    config = config or BinarizeConfig()
    _check_initialized(model)
    work = copy.deepcopy(model)
    blocks = _transform_blocks(work, config)
    return _build_report(work, config, decide(work, config, layer_map), blocks)


def binarize_(
    model: nn.Module, config: BinarizeConfig | None = None,
    layer_map: LayerMap = DEFAULT_LAYER_MAP, *, warn: bool = True, probe: bool | None = None,
) -> ConversionReport:
    """Binarize ``model`` in place: chosen conv/linear layers become IR-Net layers.

    The latent weights are the model's own tensors (shared, not copied), so a
    pretrained model starts fine-tuning from its full-precision weights.
    Converting an already converted model changes nothing.

    Args:
        model: any ``nn.Module``.
        config: what to binarize; the defaults keep stem, classifier, 1x1
            shortcuts and depthwise/grouped convolutions in full precision.
        layer_map: float type -> IR-Net type; extend it for custom layers.
        warn: emit a ``UserWarning`` for each 1W/1A layer whose inputs are
            all non-negative.
        probe: run the forward pass that finds such layers (their rows in the
            report carry a ``warning``); defaults to ``warn``. Rebuilding a
            saved model passes ``warn=False`` and skips it.

    Returns:
        The :class:`ConversionReport` of what was done.

    Raises:
        ConversionError: nothing in the model can or may be binarized; the
            model has uninitialized (lazy) parameters; ``model`` is itself a
            bare conv/linear layer.

    Example:
        >>> import torchvision, irconvert
        >>> model = torchvision.models.resnet18()
        >>> report = irconvert.binarize_(model, irconvert.BinarizeConfig(act_bits=32))
        >>> report.binarized_layers
        16
    """
    config = config or BinarizeConfig()
    _check_initialized(model)
    already = any(isinstance(m, IRLayer) for m in model.modules())
    blocks = [] if already else _transform_blocks(model, config)
    decisions = decide(model, config, layer_map)
    todo = [n for n, d in decisions.items() if d.binarize and d.reason != "already binarized"]
    if not todo and not already:
        kept = sorted({d.reason for d in decisions.values()})
        if not decisions:
            raise ConversionError("nothing to binarize: the model has no conv or linear layer")
        raise ConversionError(
            f"nothing to binarize: all {len(decisions)} conv/linear layers stay full precision "
            f"({', '.join(kept)}); relax keep_* options or include patterns"
        )
    if "" in todo:  # setattr cannot replace the object the caller holds
        raise ConversionError(
            f"cannot binarize a bare {type(model).__name__} in place; "
            "wrap it in nn.Sequential or use IRConv2d/IRLinear.from_float"
        )
    report = _build_report(model, config, decisions, blocks)
    replaced: dict[int, nn.Module] = {}
    for name in todo:
        old = model.get_submodule(name)
        replaced[id(old)] = layer_map[type(old)].from_float(
            old, binary_act=config.binary_activations)
    # named_modules() lists a module used in two places once: swap every place
    places = [(n, replaced[id(m)]) for n, m in model.named_modules(remove_duplicate=False)
              if id(m) in replaced]
    for name, new in places:
        _set_submodule(model, name, new)
    if config.act_threshold:
        enable_act_thresholds_(model)
    if warn:
        for line in report.warnings:
            warnings.warn(f"irconvert: {line}", UserWarning, stacklevel=2)
    return report


def binarize(
    model: nn.Module, config: BinarizeConfig | None = None,
    layer_map: LayerMap = DEFAULT_LAYER_MAP, *, warn: bool = True,
) -> tuple[nn.Module, ConversionReport]:
    """Copying variant of :func:`binarize_`: the original model is untouched."""
    new = copy.deepcopy(model)
    return new, binarize_(new, config, layer_map, warn=warn)


def unbinarize_(model: nn.Module) -> int:
    """Turn every IR-Net layer back into its float layer (latent weights kept).

    Block transforms are not undone. Returns the number of layers changed.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, IRLayer)]
    if "" in names:
        raise ConversionError(
            f"cannot unbinarize a bare {type(model).__name__} in place; call its to_float()"
        )
    floats: dict[int, nn.Module] = {}
    for name in names:
        layer: Any = model.get_submodule(name)  # an IRConv2d/IRLinear: has to_float
        floats[id(layer)] = layer.to_float()
    places = [(n, floats[id(m)]) for n, m in model.named_modules(remove_duplicate=False)
              if id(m) in floats]
    for name, new in places:
        _set_submodule(model, name, new)
    return len(names)
