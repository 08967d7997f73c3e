"""Block transforms: rewrite residual blocks into the IR-Net / Bi-Real form for 1W/1A.

A pretrained ResNet has one shortcut per block and ReLU. Binarizing its
activations as-is fails twice over: a conv that follows a ReLU sees only
inputs >= 0, so ``sign`` gives +1 everywhere, and the real-valued information
of a block's input reaches its output only through the block shortcut. The
authors' models (spec, "The authors' architectures") instead put a shortcut
around *every* binarized convolution and use Hardtanh, so each sign sees both
signs and real values bypass every binary conv::

    out1 = hardtanh(bn1(conv1(x)) + shortcut(x))
    out2 = hardtanh(bn2(conv2(out1)) + out1)

The transforms here produce that form in place **without changing any
parameter or buffer**: state-dict keys and shapes are identical before and
after, so pretrained weights still load, and ``isinstance`` checks still
hold (torchvision/timm blocks get their class swapped for a subclass that
only overrides ``forward``; the built-in CIFAR block has a ``bireal`` flag).
The model-level stem activation (``CifarResNet.act``, torchvision
``ResNet.relu``, timm ``ResNet.act1``) also becomes Hardtanh: its output is
the input of the first binarized conv *and* of its shortcut, so under ReLU
that conv would see only +1 bits. Hardtanh there matches the authors' code
(``hardtanh(bn1(conv1(x)))``) and keeps the residual stream bounded; it
changes the pretrained function (negative values now pass, values > 1 are
clipped), which fine-tuning recovers.

Bottleneck blocks (1x1 in->width, 3x3 width->width with the stride, 1x1
width->4*planes) have convs that change the channel count, so an identity
shortcut does not fit. Parameter-free choice, closest to the pretrained
function and keeping the full-width residual stream::

    out1 = hardtanh(bn1(conv1(x))    + fit(x, width))          # channel group-mean
    out2 = hardtanh(bn2(conv2(out1)) + fit(out1, width, s))     # avg-pool for stride s
    out3 = hardtanh(bn3(conv3(out2)) + (downsample(x) or x))    # the block's own shortcut

``fit`` (:func:`fit_shortcut`) average-pools by the conv's stride and matches
channels by averaging groups of channels (fewer out) or repeating channels
(more out), as ReActNet does for its channel-doubling blocks. The block's
original shortcut (the identity, or the pretrained ``downsample`` branch)
serves ``conv3`` because its output has exactly ``conv3``'s output shape;
in a downsampling basic block it serves ``conv1`` for the same reason.

Not recognised (left untouched): timm blocks with anti-aliasing (``aa``)
or ``reduce_first != 1``, and any other architecture; convert those with
1W/32A or write a transform and append it to
:data:`irconvert.convert.surgery.BLOCK_TRANSFORMS`.

torchvision and timm are only looked at when the caller has imported them
(a model cannot hold their blocks otherwise), so importing irconvert stays
fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irconvert.convert.surgery import BLOCK_TRANSFORMS
from irconvert.models.cifar import BasicBlock as CifarBasicBlock
from irconvert.models.cifar import CifarResNet

__all__ = [
    "fit_shortcut",
    "transform_cifar_blocks",
    "transform_timm_blocks",
    "transform_torchvision_blocks",
]

_NONNEG_ACTS = (nn.ReLU, nn.ReLU6)


def fit_shortcut(x: Tensor, channels: int, stride: int = 1) -> Tensor:
    """Parameter-free shortcut from ``x`` to a conv output with ``channels`` and ``stride``.

    Spatial: ``avg_pool2d(kernel=stride, stride=stride, ceil_mode=True)``, which
    matches a 3x3/padding-1 conv's output size for odd sizes too.
    Channels (``C`` in, ``channels`` out): equal -> unchanged; more -> channel
    ``j`` is input channel ``j % C`` (repeat); fewer -> output ``j`` is the mean of
    input channels ``j, j + channels, j + 2 * channels, ...`` (the inverse of
    the repeat).
    """
    if stride > 1:
        x = F.avg_pool2d(x, stride, stride, ceil_mode=True, count_include_pad=False)
    n, c, h, w = x.shape
    if channels == c:
        return x
    if channels > c:
        reps = -(-channels // c)
        return x.repeat(1, reps, 1, 1)[:, :channels]
    groups = -(-c // channels)
    pad = groups * channels - c
    if not pad:
        return x.view(n, groups, channels, h, w).mean(1)
    x = F.pad(x, (0, 0, 0, 0, 0, pad))
    count = torch.full((channels,), float(groups), dtype=x.dtype, device=x.device)
    count[channels - pad:] -= 1
    return x.view(n, groups, channels, h, w).sum(1) / count.view(1, channels, 1, 1)


def _fit_to(x: Tensor, conv: nn.Conv2d) -> Tensor:
    stride = conv.stride[0] if isinstance(conv.stride, tuple) else int(conv.stride)
    return fit_shortcut(x, conv.out_channels, stride)


def _hardtanh_like(act: nn.Module) -> nn.Hardtanh:
    return nn.Hardtanh(inplace=bool(getattr(act, "inplace", False)))


def _branch(block: Any, y: Tensor) -> Tensor:
    """timm's stochastic depth on one residual branch, when the block has it."""
    drop_path = getattr(block, "drop_path", None)
    return drop_path(y) if drop_path is not None else y


# --- the built-in CIFAR ResNets -------------------------------------------------------


def transform_cifar_blocks(model: nn.Module) -> list[str]:
    """Switch built-in CIFAR ``BasicBlock``s to the IR-Net form (``bireal`` + Hardtanh).

    Also makes each ``CifarResNet`` stem activation Hardtanh. Returns the
    dotted names of the blocks changed (already transformed ones are skipped).
    """
    changed: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, CifarBasicBlock) and not module.bireal:
            module.bireal = True
            module.act1 = _hardtanh_like(module.act1)
            module.act2 = _hardtanh_like(module.act2)
            changed.append(name)
    if changed:
        for module in model.modules():
            if isinstance(module, CifarResNet) and isinstance(module.act, _NONNEG_ACTS):
                module.act = _hardtanh_like(module.act)  # type: ignore[assignment]
    return changed


# --- torchvision ResNets ----------------------------------------------------------------


def _tv_basic_forward(self: Any, x: Tensor) -> Tensor:
    shortcut = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)) + shortcut)
    out2: Tensor = self.relu(self.bn2(self.conv2(out)) + out)
    return out2


def _tv_bottleneck_forward(self: Any, x: Tensor) -> Tensor:
    out = self.relu(self.bn1(self.conv1(x)) + _fit_to(x, self.conv1))
    out = self.relu(self.bn2(self.conv2(out)) + _fit_to(out, self.conv2))
    shortcut = x if self.downsample is None else self.downsample(x)
    out3: Tensor = self.relu(self.bn3(self.conv3(out)) + shortcut)
    return out3


# --- timm ResNets -------------------------------------------------------------------------


def _timm_basic_forward(self: Any, x: Tensor) -> Tensor:
    shortcut = x if self.downsample is None else self.downsample(x)
    out = self.act1(_branch(self, self.drop_block(self.bn1(self.conv1(x)))) + shortcut)
    y = self.bn2(self.conv2(out))
    if self.se is not None:
        y = self.se(y)
    out2: Tensor = self.act2(_branch(self, y) + out)
    return out2


def _timm_bottleneck_forward(self: Any, x: Tensor) -> Tensor:
    out = self.act1(_branch(self, self.bn1(self.conv1(x))) + _fit_to(x, self.conv1))
    y = self.drop_block(self.bn2(self.conv2(out)))
    out = self.act2(_branch(self, y) + _fit_to(out, self.conv2))
    y = self.bn3(self.conv3(out))
    if self.se is not None:
        y = self.se(y)
    shortcut = x if self.downsample is None else self.downsample(x)
    out3: Tensor = self.act3(_branch(self, y) + shortcut)
    return out3


# --- class swapping, lazily, so torchvision/timm are imported only by their users ---------

# public subclass name -> (defining module, base class name, forward)
_SPECS: dict[str, tuple[str, str, Callable[[Any, Tensor], Tensor]]] = {
    "TorchvisionBiRealBasicBlock": ("torchvision.models.resnet", "BasicBlock", _tv_basic_forward),
    "TorchvisionBiRealBottleneck": (
        "torchvision.models.resnet", "Bottleneck", _tv_bottleneck_forward),
    "TimmBiRealBasicBlock": ("timm.models.resnet", "BasicBlock", _timm_basic_forward),
    "TimmBiRealBottleneck": ("timm.models.resnet", "Bottleneck", _timm_bottleneck_forward),
}
_CLASSES: dict[str, type[nn.Module]] = {}


def _bireal_class(name: str) -> type[nn.Module]:
    """The Bi-Real subclass ``name``, made on first use (importing its library)."""
    if name not in _CLASSES:
        module_name, base_name, forward = _SPECS[name]
        __import__(module_name)
        base = getattr(sys.modules[module_name], base_name)
        _CLASSES[name] = type(name, (base,), {
            "forward": forward, "__module__": __name__, "__qualname__": name,
            "__doc__": f"{base.__module__}.{base_name} with the Bi-Real forward (see {__name__}).",
        })
    return _CLASSES[name]


def __getattr__(name: str) -> type[nn.Module]:
    # Lets pickle find the lazily made classes (torch.save of a whole model).
    if name in _SPECS:
        return _bireal_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _swap_blocks(
    model: nn.Module, module_name: str, rules: dict[str, Callable[[nn.Module], bool]],
    stem_types: tuple[str, str],
) -> list[str]:
    """Swap every block of ``module_name``'s base classes that its rule accepts."""
    lib = sys.modules.get(module_name)
    if lib is None:  # never imported: the model cannot hold its blocks
        return []
    plan: list[tuple[str, nn.Module, type[nn.Module]]] = []
    for sub_name, rule in rules.items():
        _, base_name, _ = _SPECS[sub_name]
        base = getattr(lib, base_name)
        new_cls = _bireal_class(sub_name)
        for name, module in model.named_modules():
            if type(module) is base and rule(module):
                plan.append((name, module, new_cls))
    for _, module, new_cls in plan:
        module.__class__ = new_cls
        for attr in ("relu", "act1", "act2", "act3"):
            act = getattr(module, attr, None)
            if isinstance(act, nn.Module) and not isinstance(act, nn.Hardtanh):
                setattr(module, attr, _hardtanh_like(act))
    if plan:
        model_cls_name, stem_attr = stem_types
        model_cls = getattr(lib, model_cls_name)
        for module in model.modules():
            stem_act = getattr(module, stem_attr, None)
            if isinstance(module, model_cls) and isinstance(stem_act, _NONNEG_ACTS):
                setattr(module, stem_attr, _hardtanh_like(stem_act))
    return sorted((name for name, _, _ in plan), key=_module_order(model))


def _module_order(model: nn.Module) -> Callable[[str], int]:
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return lambda name: order.get(name, len(order))


def transform_torchvision_blocks(model: nn.Module) -> list[str]:
    """Bi-Real form for torchvision ``BasicBlock``/``Bottleneck``; stem ``relu`` -> Hardtanh."""
    return _swap_blocks(
        model, "torchvision.models.resnet",
        {"TorchvisionBiRealBasicBlock": lambda m: True,
         "TorchvisionBiRealBottleneck": lambda m: True},
        ("ResNet", "relu"),
    )


def _timm_supported(block: nn.Module) -> bool:
    if not isinstance(getattr(block, "aa", None), nn.Identity):
        return False  # anti-aliased blocks stride after the activation: not handled
    if hasattr(block, "conv3"):
        return True
    conv1, conv2 = block.conv1, block.conv2
    return isinstance(conv1, nn.Conv2d) and isinstance(conv2, nn.Conv2d) and (
        conv1.out_channels == conv2.out_channels)  # reduce_first == 1


def transform_timm_blocks(model: nn.Module) -> list[str]:
    """Bi-Real form for timm ``BasicBlock``/``Bottleneck``; stem ``act1`` -> Hardtanh."""
    return _swap_blocks(
        model, "timm.models.resnet",
        {"TimmBiRealBasicBlock": _timm_supported, "TimmBiRealBottleneck": _timm_supported},
        ("ResNet", "act1"),
    )


BLOCK_TRANSFORMS.extend([
    transform_cifar_blocks, transform_torchvision_blocks, transform_timm_blocks,
])
