"""Knowledge distillation from the full-precision model into its binarized copy.

Real-to-Binary (Martinez et al., ICLR 2020) and ReActNet (Liu et al., ECCV
2020) train binary networks against a full-precision teacher's output
distribution; with ``alpha = 1`` (their setting) the labels are not used at all.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irconvert.errors import ConfigError

__all__ = ["DistillationLoss"]


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

    def __init__(self, teacher: nn.Module, alpha: float = 0.5, temperature: float = 1.0) -> None:
        super().__init__()
        if not isinstance(teacher, nn.Module):
            raise ConfigError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        if not _is_number(alpha) or not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be a number in [0, 1], got {alpha!r}")
        if not _is_number(temperature) or not temperature > 0:
            raise ConfigError(f"temperature must be a positive number, got {temperature!r}")
        self.teacher = teacher.eval()
        self.alpha = float(alpha)
        self.temperature = float(temperature)

    def train(self, mode: bool = True) -> DistillationLoss:
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_logits(self, inputs: Tensor) -> Tensor:
        """The teacher's logits on ``inputs`` (eval mode, no gradient)."""
        self.teacher.eval()
        with torch.no_grad():
            out: Tensor = self.teacher(inputs)
        return out.detach()

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
        if self.alpha > 0.0:
            t = self.temperature
            teacher = self.teacher_logits(inputs).to(student_logits.dtype)
            kl = F.kl_div(F.log_softmax(student_logits / t, dim=1),
                          F.softmax(teacher / t, dim=1), reduction="batchmean")
            loss = loss + self.alpha * t * t * kl
        return loss

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, temperature={self.temperature}"


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
