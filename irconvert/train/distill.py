"""Knowledge distillation from the full-precision model into its binarized copy.

Real-to-Binary (Martinez et al., ICLR 2020) and ReActNet (Liu et al., ECCV
2020) train binary networks against a full-precision teacher's output
distribution; with ``alpha = 1`` (their setting) the labels are not used at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irconvert.errors import ConfigError
from irconvert.train.phases import phase

__all__ = ["DistillationLoss", "FeatureMatcher", "attention_map"]


class DistillationLoss(nn.Module):
    """``(1 - alpha) * CE(student, y) + alpha * T^2 * KL(p_teacher || p_student)``.

    ``p = softmax(logits / T)``; the KL term is averaged over the batch
    (``reduction="batchmean"``, the true KL divergence per sample) and scaled
    by ``T^2`` so its gradient keeps the same size for every ``T`` (Hinton et
    al., 2015). The teacher runs in eval mode under ``torch.no_grad`` and stays
    in eval mode when this module is switched to training.

    Args:
        teacher: the frozen full-precision model; called on the same inputs.
        alpha: weight of the distillation term in ``[0, 1]``; 1 is pure
            distillation, 0 plain cross-entropy (the teacher is then not run).
        temperature: softmax temperature ``T > 0``.

    Raises:
        ConfigError: ``teacher`` is not a module, or ``alpha``/``temperature``
            is out of range.

    Example:
        >>> loss_fn = DistillationLoss(fp_model, alpha=1.0)  # doctest: +SKIP
        >>> loss = loss_fn(images, student(images), labels)  # doctest: +SKIP
    """

    def __init__(self, teacher: nn.Module, alpha: float = 0.5, temperature: float = 1.0,
                 kind: str = "logits", teacher_fn: Callable[[Tensor], Tensor] | None = None,
                 features: FeatureMatcher | None = None) -> None:
        super().__init__()
        if kind not in ("logits", "distributional"):
            raise ConfigError(f"kind must be logits or distributional, got {kind!r}")
        if not isinstance(teacher, nn.Module):
            raise ConfigError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        if not _is_number(alpha) or not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be a number in [0, 1], got {alpha!r}")
        if not _is_number(temperature) or not temperature > 0:
            raise ConfigError(f"temperature must be a positive number, got {temperature!r}")
        self.teacher = teacher.eval()
        # ``teacher_fn``: the same teacher, compiled / in channels_last; the
        # module itself stays here so it moves and saves with the loss.
        # (Kept out of the module tree: it is the teacher again, not a new part.)
        object.__setattr__(self, "_teacher_fn", teacher_fn)
        self.kind = kind
        self.alpha = 1.0 if kind == "distributional" else float(alpha)
        self.temperature = 1.0 if kind == "distributional" else float(temperature)
        self.features = features

    def train(self, mode: bool = True) -> DistillationLoss:
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_logits(self, inputs: Tensor) -> Tensor:
        """The teacher's logits on ``inputs`` (eval mode, no gradient)."""
        self.teacher.eval()
        with torch.inference_mode(), phase("teacher"):
            fn: Any = self._teacher_fn if self._teacher_fn is not None else self.teacher
            out: Tensor = fn(inputs)
        # A plain tensor (not an inference tensor) so autograd may use it.
        return out.clone()

    def forward(self, inputs: Tensor, student_logits: Tensor, targets: Tensor) -> Tensor:
        """The loss for one batch.

        Args:
            inputs: the batch the student saw (the teacher is run on it).
            student_logits: the student's ``(N, classes)`` logits.
            targets: ``(N,)`` class indices.
        """
        loss = student_logits.new_zeros(())
        if self.alpha < 1.0:
            loss = loss + (1.0 - self.alpha) * F.cross_entropy(student_logits, targets)
        need_teacher = self.alpha > 0.0 or (self.features is not None and self.features.weight)
        if need_teacher:
            if self.features is not None:
                self.features.teacher_outputs.clear()
            teacher = self.teacher_logits(inputs).to(student_logits.dtype)
        if self.alpha > 0.0:
            t = self.temperature
            log_p = F.log_softmax(student_logits / t, dim=1)
            q = F.softmax(teacher / t, dim=1)
            if self.kind == "distributional":
                # ReActNet: cross-entropy against the teacher's distribution
                # (KL minus the teacher's entropy: the same gradient).
                loss = loss - (q * log_p).sum(1).mean()
            else:
                kl = F.kl_div(log_p, q, reduction="batchmean")
                loss = loss + self.alpha * t * t * kl
        if self.features is not None and self.features.weight:
            loss = loss + self.features.loss()
        return loss

    def extra_repr(self) -> str:
        return f"kind={self.kind}, alpha={self.alpha}, temperature={self.temperature}"


def attention_map(x: Tensor) -> Tensor:
    """Spatial attention: channel mean of ``x ** 2``, flattened and L2-normalised."""
    a = x.float().pow(2).mean(1).flatten(1)
    return F.normalize(a, dim=1)


class FeatureMatcher:
    """Matches the outputs of the same-named blocks in student and teacher.

    Forward hooks record each block's output in both models; :meth:`loss` is
    ``weight * sum_b mean ||A_s(b) - A_t(b)||^2`` over the blocks, with ``A``
    the :func:`attention_map` (scale-free: the binary student's block outputs
    live on another scale than the teacher's ReLU outputs).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, blocks: list[str],
                 weight: float) -> None:
        self.weight = float(weight)
        self.blocks = list(blocks)
        self.student_outputs: dict[str, Tensor] = {}
        self.teacher_outputs: dict[str, Tensor] = {}
        s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
        missing = [b for b in self.blocks if b not in s_mods or b not in t_mods]
        if missing:
            raise ConfigError(f"distill.features: block {missing[0]!r} is not in both models")
        self._handles = []
        for name in self.blocks:
            self._handles += [
                s_mods[name].register_forward_hook(self._record(self.student_outputs, name)),
                t_mods[name].register_forward_hook(self._record(self.teacher_outputs, name))]

    def remove(self) -> None:
        """Take the hooks off both models (a new stage brings its own matcher)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @staticmethod
    def _record(store: dict[str, Tensor], name: str) -> Callable[..., None]:
        def hook(_: nn.Module, __: Any, out: Tensor) -> None:
            store[name] = out
        return hook

    def loss(self) -> Tensor:
        total: Tensor | None = None
        for name in self.blocks:
            s, t = self.student_outputs.get(name), self.teacher_outputs.get(name)
            if s is None or t is None:
                continue
            term = (attention_map(s) - attention_map(t.detach())).pow(2).sum(1).mean()
            total = term if total is None else total + term
        self.student_outputs.clear()
        self.teacher_outputs.clear()
        if total is None:
            raise ConfigError("distill.features: no block output was recorded")
        return self.weight * total


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
