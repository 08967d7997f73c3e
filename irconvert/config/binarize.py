"""What to binarize (:class:`BinarizeConfig`) and the EDE schedule (:class:`EDEConfig`).

Both are :class:`~irconvert.config.base.Section` s: checked on creation, and
saved as plain dicts in recipes, run checkpoints and exported files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from irconvert.config.base import FieldError, Section, one_or_many, positive

__all__ = ["BinarizeConfig", "EDEConfig"]


@dataclass(frozen=True, kw_only=True)
class BinarizeConfig(Section):
    """What to binarize and how.

    Args:
        act_bits: 1 for 1W/1A (binary activations), 32 for 1W/32A (weights only).
        include: glob patterns on dotted module names; a matching layer is
            binarized even if a ``keep_*`` default would keep it.
        exclude: glob patterns; a matching layer stays full precision (wins
            over ``include``).
        keep_stem: keep the first convolution in full precision.
        keep_classifier: keep the final classifier in full precision.
        keep_downsample: keep 1x1 convolutions of residual shortcuts.
        keep_depthwise: keep depthwise convolutions (groups == in_channels).
        keep_grouped: keep other grouped convolutions (1 < groups < in_channels).
        keep_se: keep the layers of squeeze-and-excitation gates (their input
            is a pooled ReLU output: every activation bit would be +1).
        block_transform: rewrite recognised residual blocks for binarization
            (Hardtanh instead of ReLU, a shortcut around every binarized conv).
            ``"auto"`` does it for 1W/1A only.
        act_threshold: give every binarized layer with binary inputs a
            learnable per-channel threshold before its sign (ReActNet's RSign),
            initialised from data so each channel's bits start balanced.
        block_act: the activation of rewritten blocks: ``hardtanh`` (IR-Net)
            or ``rprelu`` (ReActNet's PReLU with learnt input/output shifts).
        one_signed_inputs: what 1W/1A does with a layer whose inputs have one
            sign in at least half of their channels (after a ReLU, ReLU6 or a
            concatenation of them), found by a forward pass at conversion:
            ``threshold`` (default) gives that layer a learnable per-channel
            threshold, initialised to balance its bits (from the training
            data when fine-tuning); ``warn`` only reports it (every bit of such
            a channel is +1: the layer learns nothing and the BatchNorm after
            it blows the gradient up).
    """

    act_bits: Literal[1, 32] = 1
    include: tuple[str, ...] = one_or_many(default=())
    exclude: tuple[str, ...] = one_or_many(default=())
    keep_stem: bool = True
    keep_classifier: bool = True
    keep_downsample: bool = True
    keep_depthwise: bool = True
    keep_grouped: bool = True
    keep_se: bool = True
    block_transform: Literal["auto", "on", "off"] = "auto"
    act_threshold: bool = False
    block_act: Literal["hardtanh", "rprelu"] = "hardtanh"
    one_signed_inputs: Literal["threshold", "warn"] = "threshold"

    def check_fields(self) -> None:
        if self.act_threshold and self.act_bits != 1:
            raise FieldError("act_threshold", "false when {0} is 32 (1W/32A has no activation "
                             "sign to put a threshold before)", True, ("act_bits",))

    @property
    def binary_activations(self) -> bool:
        return self.act_bits == 1

    @property
    def transforms_blocks(self) -> bool:
        """Whether residual blocks are rewritten (``auto``: for 1W/1A only)."""
        if self.block_transform == "auto":
            return self.binary_activations
        return self.block_transform == "on"


@dataclass(frozen=True, kw_only=True)
class EDEConfig(Section):
    """The EDE schedule: ``t`` grows log-linearly from ``t_min`` to ``t_max``.

    Args:
        t_min: temperature at the start (the paper: 0.1; the authors' CIFAR
            ResNet-20 1W/1A script: 0.001).
        t_max: temperature at the end (10).
        per: update ``t``, ``k`` once per ``"epoch"`` (the paper) or every
            ``"step"`` (smoother).
    """

    t_min: float = positive(default=0.1)
    t_max: float = positive(default=10.0)
    per: Literal["epoch", "step"] = "epoch"

    def check_fields(self) -> None:
        if self.t_min > self.t_max:
            raise FieldError("t_min", f"at most {{0}} ({self.t_max})", self.t_min, ("t_max",))
