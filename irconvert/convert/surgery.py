"""Module surgery: swap float conv/linear layers for IR-Net layers in place."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Collection
from typing import Any

from torch import nn
from torch.nn.parameter import is_lazy

from irconvert.config import BinarizeConfig
from irconvert.convert.probe import LayerProbe, input_channels, probe_layers
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
ONE_SIGNED_WARNING = (
    "{count} of {channels} input channels have one sign (a ReLU-like output), so their "
    "activation bits never change; set one_signed_inputs: threshold, exclude the layer, "
    "or use 1W/32A"
)
ONE_SIGNED_FIX = (
    "{count} of {channels} input channels have one sign (a ReLU-like output): learnable "
    "activation threshold added, initialised to balance the bits"
)
UNCALLED = (
    "not called by the model's forward pass (the model reads its weight directly, as "
    "attention blocks often do, or the layer is unused at inference): binarizing it "
    "would change nothing"
)
SAVED_FLOAT = "full precision in the saved model"

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


def _probe(model: nn.Module, decisions: dict[str, Decision], config: BinarizeConfig,
           layers: Collection[str] | None) -> LayerProbe | None:
    """Run the conversion's forward pass; keep layers it shows cannot be binarized.

    ``layers`` (a saved model's binary layers) decides instead of a probe.
    """
    chosen = {n for n, d in decisions.items() if d.binarize and d.reason != "already binarized"}
    if layers is not None:
        for name in chosen - set(layers):
            decisions[name] = Decision(False, SAVED_FLOAT)
        return None
    # the sign statistics and thresholds only matter when bits can be fixed or warned of
    signs = config.binary_activations and not config.act_threshold
    probe = probe_layers(model, chosen, signs=signs,
                         thresholds=signs and config.one_signed_inputs == "threshold") \
        if chosen else None
    if probe is not None:
        for name in chosen - probe.called:
            decisions[name] = Decision(False, UNCALLED)
    return probe


def _one_signed_note(name: str, probe: LayerProbe | None, config: BinarizeConfig,
                     decision: Decision) -> tuple[str | None, str | None]:
    """``(warning, fix)`` for a binarized layer whose inputs are mostly one-signed."""
    # (with act_threshold every layer has a threshold set from data: nothing to say)
    if probe is None or not decision.binarize or not probe.mostly_one_signed(name):
        return None, None
    count, channels = probe.one_signed[name]
    if config.one_signed_inputs == "threshold":
        return None, ONE_SIGNED_FIX.format(count=count, channels=channels)
    if count == channels:
        return RELU_WARNING, None
    return ONE_SIGNED_WARNING.format(count=count, channels=channels), None


def _build_report(
    model: nn.Module, config: BinarizeConfig, decisions: dict[str, Decision], blocks: list[str],
    probe: LayerProbe | None = None,
) -> ConversionReport:
    modules = dict(model.named_modules())
    chosen = {n for n, d in decisions.items() if d.binarize}
    rows = []
    for name, decision in decisions.items():
        module = modules[name]
        weight = getattr(module, "weight", None)
        warning, fix = _one_signed_note(name, probe, config, decision)
        rows.append(LayerRow(
            name=name,
            type=type(module).__name__,
            shape=list(weight.shape) if weight is not None else [],
            params=sum(p.numel() for p in module.parameters(recurse=False)),
            binarize=decision.binarize,
            reason=decision.reason,
            warning=warning,
            fix=fix,
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
    decisions = decide(work, config, layer_map)
    probe = _probe(work, decisions, config, None)
    return _build_report(work, config, decisions, blocks, probe)


def binarize_(
    model: nn.Module, config: BinarizeConfig | None = None,
    layer_map: LayerMap = DEFAULT_LAYER_MAP, *, warn: bool = True, probe: bool = True,
    layers: Collection[str] | None = None,
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
            mostly one-signed and left so (``one_signed_inputs: warn``).
        probe: run one forward pass on a random batch (when the input shape
            can be told) that finds (a) chosen layers the forward pass never
            calls: the model reads their weight directly, so they stay full
            precision, with the reason; (b) in 1W/1A, layers whose inputs
            have one sign in most channels: they get a learnable activation
            threshold (``config.one_signed_inputs``).
        layers: binarize exactly these of the chosen layers, no probe (what a
            rebuilt saved model passes: its binary layers are known).

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
    found = None
    if not already and (layers is not None or probe):
        found = _probe(model, decisions, config, layers)
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
    report = _build_report(model, config, decisions, blocks, found)
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
    elif found is not None:
        _threshold_one_signed(model, report, found)
    if warn:
        for line in report.warnings:
            warnings.warn(f"irconvert: {line}", UserWarning, stacklevel=2)
    return report


def _threshold_one_signed(model: nn.Module, report: ConversionReport,
                          probe: LayerProbe) -> None:
    """Give the layers the report fixed a threshold that balances the probe's bits."""
    for row in report.rows:
        if row.fix is None:
            continue
        layer = model.get_submodule(row.name)
        if isinstance(layer, IRLayer) and layer.binary_act:
            layer.enable_act_threshold(probe.thresholds.get(row.name))


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
