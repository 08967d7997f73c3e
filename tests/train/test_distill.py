"""DistillationLoss: value against a hand computation, edge cases, bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from irconvert.errors import ConfigError, IRConvertError
from irconvert.train.distill import DistillationLoss


class Fixed(nn.Module):
    """A 'teacher' that returns given logits whatever the input; records its mode."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.scale = nn.Parameter(torch.ones(()))
        self.seen_training: list[bool] = []
        self.seen_grad: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_training.append(self.training)
        self.seen_grad.append(torch.is_grad_enabled())
        return self.logits * self.scale


TEACHER = [[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]]
STUDENT = [[1.0, 1.0, 0.0], [0.0, -1.0, 2.0]]
TARGETS = [0, 2]


def _hand(alpha: float, t: float) -> float:
    total_ce = total_kl = 0.0
    for s_row, t_row, y in zip(STUDENT, TEACHER, TARGETS, strict=True):
        log_z = math.log(sum(math.exp(v) for v in s_row))
        total_ce += log_z - s_row[y]
        p = [math.exp(v / t) for v in t_row]
        p = [v / sum(p) for v in p]
        q = [math.exp(v / t) for v in s_row]
        q = [v / sum(q) for v in q]
        total_kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    n = len(TARGETS)
    return (1 - alpha) * total_ce / n + alpha * t * t * total_kl / n


def _loss(alpha: float, t: float) -> tuple[torch.Tensor, Fixed]:
    teacher = Fixed(torch.tensor(TEACHER))
    loss_fn = DistillationLoss(teacher, alpha=alpha, temperature=t)
    loss = loss_fn(torch.zeros(2, 1), torch.tensor(STUDENT), torch.tensor(TARGETS))
    return loss, teacher


@pytest.mark.parametrize(("alpha", "t"), [(0.5, 1.0), (0.3, 4.0), (0.0, 2.0), (1.0, 1.0),
                                          (1.0, 3.0)])
def test_value_matches_hand_computation(alpha: float, t: float) -> None:
    loss, _ = _loss(alpha, t)
    assert loss.item() == pytest.approx(_hand(alpha, t), rel=1e-5)


def test_alpha_zero_is_cross_entropy_and_skips_teacher() -> None:
    loss, teacher = _loss(0.0, 1.0)
    ce = nn.functional.cross_entropy(torch.tensor(STUDENT), torch.tensor(TARGETS))
    torch.testing.assert_close(loss, ce)
    assert teacher.seen_training == []


def test_alpha_one_ignores_labels() -> None:
    a, _ = _loss(1.0, 2.0)
    teacher = Fixed(torch.tensor(TEACHER))
    b = DistillationLoss(teacher, alpha=1.0, temperature=2.0)(
        torch.zeros(2, 1), torch.tensor(STUDENT), torch.tensor([1, 1]))
    torch.testing.assert_close(a, b)


def test_equal_logits_give_zero_distillation() -> None:
    teacher = Fixed(torch.tensor(STUDENT))
    loss = DistillationLoss(teacher, alpha=1.0, temperature=2.0)(
        torch.zeros(2, 1), torch.tensor(STUDENT), torch.tensor(TARGETS))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_teacher_in_eval_without_grad_and_student_gets_grad() -> None:
    teacher = Fixed(torch.tensor(TEACHER)).train()
    loss_fn = DistillationLoss(teacher, alpha=0.5, temperature=2.0).train()
    assert not teacher.training
    student = torch.tensor(STUDENT, requires_grad=True)
    loss_fn(torch.zeros(2, 1), student, torch.tensor(TARGETS)).backward()
    assert teacher.seen_training == [False] and teacher.seen_grad == [False]
    assert teacher.scale.grad is None
    assert student.grad is not None and torch.isfinite(student.grad).all()


@pytest.mark.parametrize("kwargs", [
    {"alpha": -0.1}, {"alpha": 1.5}, {"alpha": float("nan")}, {"alpha": True},
    {"alpha": "0.5"}, {"temperature": 0.0}, {"temperature": -1.0},
    {"temperature": float("inf")},
])
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        DistillationLoss(nn.Identity(), **kwargs)  # type: ignore[arg-type]


def test_teacher_must_be_a_module() -> None:
    with pytest.raises(IRConvertError, match="teacher"):
        DistillationLoss(lambda x: x)  # type: ignore[arg-type]
