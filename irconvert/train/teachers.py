"""The distillation teacher: the model being converted, another model, or an ensemble.

``distill.teacher`` names the teacher as ``irconvert binarize`` takes a model
(a checkpoint, or a model name with its pretrained weights); several form an
ensemble whose logits are averaged. A stronger teacher than the model being
converted (the shared CIFAR ResNet-56 for a ResNet-20) is one of the levers
of a binary network's accuracy (Real-to-Binary, ReActNet).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from irconvert.errors import ConfigError, IRConvertError
from irconvert.io.load import load_model
from irconvert.models.heads import model_outputs

__all__ = ["LoadedTeacher", "TeacherEnsemble", "load_teacher"]


class TeacherEnsemble(nn.Module):
    """The mean of its members' logits (each member frozen, in eval mode)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        out = self.members[0](x)
        for member in self.members[1:]:
            out = out + member(x)
        return out / len(self.members)


@dataclass(frozen=True)
class LoadedTeacher:
    """The teacher module and what identifies it (kept in the run's checkpoint)."""

    module: nn.Module
    sources: list[dict[str, str | None]]


def _is_file(source: str) -> bool:
    return Path(source).exists() or "/" in source or source.startswith(".")


def load_teacher(sources: Sequence[str], num_classes: int) -> LoadedTeacher:
    """Load ``distill.teacher``: frozen, in eval mode, float32, on the CPU.

    Args:
        sources: checkpoint paths or model names (names load their pretrained
            weights: a teacher must be trained).
        num_classes: the data's classes; every teacher must output as many.

    Raises:
        ConfigError: a teacher cannot be loaded or has another number of
            classes (one line naming the field and the source).
    """
    members: list[nn.Module] = []
    ids: list[dict[str, str | None]] = []
    for source in sources:
        try:
            loaded = load_model(source, pretrained=not _is_file(source))
        except IRConvertError as exc:
            raise ConfigError(f"distill.teacher {source!r}: {exc}") from None
        classes = model_outputs(loaded.model) or loaded.num_classes
        if classes != num_classes:
            raise ConfigError(f"distill.teacher {source!r} has {classes} classes but the "
                              f"data has {num_classes}; a teacher must predict the same classes")
        members.append(loaded.model.eval().requires_grad_(False))
        ids.append({"source": source, "arch": loaded.arch, "sha256": loaded.sha256})
    module = members[0] if len(members) == 1 else TeacherEnsemble(members)
    return LoadedTeacher(module.eval(), ids)
