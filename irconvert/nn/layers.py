"""``IRConv2d`` and ``IRLinear``: torch layers whose weights (and optionally
inputs) are binarized with Libra-PB and trained with EDE.

They subclass ``nn.Conv2d``/``nn.Linear`` so ``isinstance`` checks, hooks and
the ``weight``/``bias`` state-dict keys keep working. The latent weights stay
in full precision; binarization happens in ``forward``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irconvert.functional import ede_sign, libra_pb

__all__ = ["IRConv2d", "IRLayer", "IRLinear", "channel_view", "set_binarization", "set_ede"]

_EDE_KEYS = ("ede_t", "ede_k")
THRESHOLD_KEY = "act_threshold"


class IRLayer:
    """Mixin with what both IR-Net layers share: EDE state and the act mode.

    ``ede_t``/``ede_k`` are persistent buffers so they are saved and restored
    with the model (the authors kept them as plain attributes and lost them
    on checkpoint). A state_dict without them (a float checkpoint) still
    loads: the current values are kept.
    """

    binary_act: bool
    ede_t: Tensor
    ede_k: Tensor
    act_threshold: nn.Parameter | None

    def _init_ir(self, binary_act: bool) -> None:
        self.binary_act = binary_act
        # Staged training switches these off for a while (a "weights only" or
        # "activations only" stage); the layer's kind (``binary_act``) stays.
        self.weights_on = True
        self.acts_on = True
        self.act_threshold = None
        # ``register_buffer`` is on nn.Module, which every IRLayer also is.
        module: Any = self
        device = module.weight.device  # IRConv2d(..., device="cuda"): buffers there too
        module.register_buffer("ede_t", torch.tensor(1.0, device=device))
        module.register_buffer("ede_k", torch.tensor(1.0, device=device))

    def binary_weight(self) -> Tensor:
        """``sign(w_hat) * s``: the weight the forward pass really uses."""
        weight: Tensor = self.weight  # type: ignore[attr-defined]
        if not self.weights_on:
            return weight
        return libra_pb(weight, self.ede_t, self.ede_k)

    def binarize_input(self, x: Tensor) -> Tensor:
        """``sign(x - threshold)`` in 1W/1A (threshold per input channel, when learnt)."""
        if not (self.binary_act and self.acts_on):
            return x
        if self.act_threshold is not None:
            # In the input's dtype: under bf16 autocast the subtraction must
            # not promote the whole activation tensor to fp32.
            x = x - channel_view(self.act_threshold.to(x.dtype), x, self.channel_dim)
        return ede_sign(x, self.ede_t, self.ede_k)

    @property
    def channel_dim(self) -> int:
        """The input axis that holds channels: 1 for convolutions (NCHW), -1 for linear."""
        return -1 if isinstance(self, nn.Linear) else 1

    def enable_act_threshold(self, init: Tensor | None = None) -> nn.Parameter:
        """Add (or reset) the learnable per-input-channel threshold before the sign.

        ReActNet's RSign: ``sign(x - b_c)``. ``init`` (default zeros) is
        typically the per-channel median of real inputs, so every channel's
        bits start balanced (:func:`irconvert.nn.thresholds.init_act_thresholds`).
        """
        if not self.binary_act:
            raise ValueError("activation thresholds need binary activations (1W/1A)")
        weight: Tensor = self.weight  # type: ignore[attr-defined]
        channels = weight.shape[1] * getattr(self, "groups", 1)
        value = torch.zeros(channels, device=weight.device, dtype=weight.dtype)
        if init is not None:
            value.copy_(init.reshape(channels))
        if self.act_threshold is None:
            self.act_threshold = nn.Parameter(value)
        else:
            with torch.no_grad():
                self.act_threshold.copy_(value)
        return self.act_threshold

    @property
    def act_bits(self) -> int:
        return 1 if self.binary_act else 32

    def _fill_missing_ede(self, state_dict: dict[str, Any], prefix: str) -> None:
        for key in _EDE_KEYS:
            state_dict.setdefault(prefix + key, getattr(self, key).detach().clone())
        # A checkpoint trained with thresholds creates them here, so any
        # model rebuilt from its architecture loads it strictly.
        if prefix + THRESHOLD_KEY in state_dict and self.act_threshold is None:
            self.enable_act_threshold()


def channel_view(values: Tensor, x: Tensor, channel_dim: int) -> Tensor:
    """Per-channel ``values`` shaped to broadcast against ``x`` along ``channel_dim``.

    Linear layers take ``(N, ..., C)`` (a transformer's tokens): channels are
    the last axis there, dim 1 only for convolutions' ``(N, C, H, W)``.
    """
    if channel_dim == -1 or x.dim() == 2:
        return values
    return values.view((1, -1) + (1,) * (x.dim() - 2))


def _adopt(new: nn.Module, old: nn.Module, ede: bool) -> None:
    """Make ``new`` (built on the meta device) hold ``old``'s tensors, not copies."""
    weight: Tensor = old.weight  # type: ignore[assignment]
    new.weight = weight
    new.bias = old.bias
    if ede:  # fresh EDE state where the weights live
        new.ede_t = torch.ones((), device=weight.device)
        new.ede_k = torch.ones((), device=weight.device)
    new.train(old.training)


def _ir_extra_repr(base: str, layer: IRLayer) -> str:
    return f"{base}, act_bits={layer.act_bits}"


class IRConv2d(IRLayer, nn.Conv2d):
    """A ``Conv2d`` with Libra-PB binary weights and, in 1W/1A mode, sign inputs.

    ``y = conv2d(sign(x), sign(w_hat) * s)`` (1W/1A) or
    ``y = conv2d(x, sign(w_hat) * s)`` (1W/32A). Stride, padding (zeros only),
    dilation, groups and bias behave as in ``nn.Conv2d``.
    """

    def __init__(self, *args: Any, binary_act: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"IRConv2d supports zero padding only, got {self.padding_mode!r}")
        self._init_ir(binary_act)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, *, binary_act: bool = True) -> IRConv2d:
        """A binarized copy of ``conv`` that shares its weight and bias tensors."""
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride, padding=conv.padding, dilation=conv.dilation,  # type: ignore[arg-type]
            groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
            binary_act=binary_act, device="meta",
        )
        _adopt(new, conv, ede=True)
        return new

    def to_float(self) -> nn.Conv2d:
        """The plain ``Conv2d`` holding the latent weights (shared, not copied)."""
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size,  # type: ignore[arg-type]
            stride=self.stride, padding=self.padding, dilation=self.dilation,  # type: ignore[arg-type]
            groups=self.groups, bias=self.bias is not None, padding_mode=self.padding_mode,
            device="meta",
        )
        _adopt(conv, self, ede=False)
        return conv

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(
            self.binarize_input(x), self.binary_weight(), self.bias,
            self.stride, self.padding, self.dilation, self.groups,
        )

    def extra_repr(self) -> str:
        return _ir_extra_repr(super().extra_repr(), self)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        self._fill_missing_ede(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args)


class IRLinear(IRLayer, nn.Linear):
    """A ``Linear`` with Libra-PB binary weights and, in 1W/1A mode, sign inputs."""

    def __init__(self, *args: Any, binary_act: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_ir(binary_act)

    @classmethod
    def from_float(cls, linear: nn.Linear, *, binary_act: bool = True) -> IRLinear:
        """A binarized copy of ``linear`` that shares its weight and bias tensors."""
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                  binary_act=binary_act, device="meta")
        _adopt(new, linear, ede=True)
        return new

    def to_float(self) -> nn.Linear:
        """The plain ``Linear`` holding the latent weights (shared, not copied)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device="meta")
        _adopt(linear, self, ede=False)
        return linear

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.binarize_input(x), self.binary_weight(), self.bias)

    def extra_repr(self) -> str:
        return _ir_extra_repr(super().extra_repr(), self)

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        self._fill_missing_ede(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args)


def set_binarization(model: nn.Module, *, weights: bool, activations: bool) -> int:
    """Switch binarization of weights / activations on or off in every IR-Net layer.

    For staged training: off means the layer computes with its latent float
    weights (or its float inputs). Returns how many layers were set.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, IRLayer):
            module.weights_on, module.acts_on = weights, activations
            count += 1
    return count


def set_ede(model: nn.Module, t: float, k: float) -> int:
    """Set the EDE ``t``, ``k`` of every IR-Net layer in ``model``; returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, IRLayer):
            module.ede_t.fill_(t)
            module.ede_k.fill_(k)
            count += 1
    return count
