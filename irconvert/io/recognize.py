"""Which architecture does a bare state_dict belong to?

A candidate matches when it has exactly the same keys (ignoring BatchNorm's
``num_batches_tracked``) and, built with the classifier size read from the
state_dict, exactly the same shapes. Candidates are searched group by group,
built-in, then torchvision, then timm, and the first group with a match wins:
that order is also the tie-break when several architectures fit (torchvision
and timm ``resnet18`` share every key and shape), and the others are reported
as alternatives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

from irconvert.errors import UnknownArchitectureError
from irconvert.io.checkpoint_file import clean_state_dict
from irconvert.io.signatures import (
    GROUPS,
    Signature,
    build_on_meta,
    key_patterns,
    keys_hash,
    signatures,
    weight_keys,
)

__all__ = ["Recognition", "recognize", "recognize_detailed", "shape_mismatches"]

_MAX_ALTERNATIVES = 5


@dataclass(frozen=True)
class Recognition:
    arch: str
    num_classes: int | None
    alternatives: list[str] = field(default_factory=list)


def shape_mismatches(
    state_dict: Mapping[str, Tensor], expected: Mapping[str, Tensor],
) -> list[str]:
    """``key: checkpoint AxB vs model CxD`` for every shared key whose shape differs."""
    out = []
    for key, value in state_dict.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            out.append(f"{key}: checkpoint {_shape(value)} vs model {_shape(expected[key])}")
    return out


def _shape(t: Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _fits(sig: Signature, sd: Mapping[str, Tensor]) -> tuple[bool, int | None]:
    """Whether ``sig.arch`` takes every shape of ``sd``, and with which num_classes."""
    cls = sig.classifier
    num_classes = int(sd[cls].shape[0]) if cls is not None and cls in sd else None
    try:
        model = build_on_meta(sig.arch, num_classes)
    except Exception:
        return False, None
    expected = {k: v for k, v in model.state_dict().items() if k in sd}
    return len(expected) == len(sd) and not shape_mismatches(sd, expected), num_classes


def _exact(sigs: dict[str, Signature], sd: Mapping[str, Tensor], h: str) -> list[Recognition]:
    found = []
    for sig in sigs.values():
        if sig.keys_hash == h:
            ok, num_classes = _fits(sig, sd)
            if ok:
                found.append(Recognition(sig.arch, num_classes))
    return found


def _closest(sigs: list[Signature], sd: Mapping[str, Tensor], n: int = 5) -> list[str]:
    # Rank cheaply by key patterns and count, then measure exact key overlap
    # for the best few so the message shows real numbers.
    mine = set(key_patterns(sd))
    count = len(sd)

    def rough(sig: Signature) -> float:
        theirs = set(sig.patterns)
        jac = len(mine & theirs) / max(len(mine | theirs), 1)
        return jac - 0.1 * abs(sig.num_keys - count) / max(sig.num_keys, count, 1)

    ranked = sorted(sigs, key=rough, reverse=True)[: n * 2]
    scored = []
    keys = set(sd)
    for sig in ranked:
        try:
            theirs = set(weight_keys(build_on_meta(sig.arch).state_dict()))
        except Exception:
            continue
        scored.append((len(keys & theirs) / max(len(keys | theirs), 1), sig.arch))
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [f"{arch} ({100 * score:.0f}% keys shared)" for score, arch in scored[:n]]


def recognize_detailed(state_dict: Mapping[str, Tensor]) -> Recognition:
    """Like :func:`recognize`, also naming the other architectures that fit exactly."""
    sd, _ = clean_state_dict(state_dict)
    sd = {k: sd[k] for k in weight_keys(sd)}
    if not sd:
        raise UnknownArchitectureError("the state_dict is empty; nothing to recognize")
    h = keys_hash(sd)
    keys = set(sd)
    scanned: list[Signature] = []
    for i, group in enumerate(GROUPS):
        sigs = signatures(group, keys=keys)
        scanned.extend(sigs.values())
        found = _exact(sigs, sd, h)
        if found:
            # Alternatives from later groups only where already known: a full
            # timm scan would make every lookup slow.
            for later in GROUPS[i + 1:]:
                found += _exact(signatures(later, build=False), sd, h)
            names = [r.arch for r in found]
            return Recognition(found[0].arch, found[0].num_classes,
                               names[1: 1 + _MAX_ALTERNATIVES])
    near = _closest(scanned, sd)
    raise UnknownArchitectureError(
        f"the state_dict ({len(sd)} tensors) matches no built-in, torchvision or timm "
        f"architecture; closest: {'; '.join(near) or 'none'}. Pass --arch NAME "
        "(timm:NAME for timm) if you know it"
    )


def recognize(state_dict: Mapping[str, Tensor]) -> tuple[str, int]:
    """Find the architecture and class count of a bare state_dict.

    Args:
        state_dict: tensors by key; ``module.``/``_orig_mod.`` prefixes and
            missing ``num_batches_tracked`` entries are fine.

    Returns:
        ``(arch, num_classes)`` with ``arch`` a name for
        :func:`irconvert.models.build_model` (``cifar_resnet20``,
        ``resnet18``, ``timm:efficientnet_b0``).

    Raises:
        UnknownArchitectureError: no architecture fits; the message lists the
            closest candidates by shared keys.

    Example:
        >>> from irconvert.models import build_model
        >>> recognize(build_model("cifar_resnet20", num_classes=100).state_dict())
        ('cifar_resnet20', 100)
    """
    found = recognize_detailed(state_dict)
    if found.num_classes is None:
        raise UnknownArchitectureError(
            f"{found.arch} fits the keys but the state_dict has no classifier to read "
            "the class count from; pass --arch and --num-classes")
    return found.arch, found.num_classes
