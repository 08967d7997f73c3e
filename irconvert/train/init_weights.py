"""``init``: start a run's converted model from another run's trained weights.

The usual start is the full-precision model itself. A run that already
trained the same network in another mode (1W/32A, which reaches ~90% on
CIFAR-10 in half an hour) is a closer start for 1W/1A: its latent weights
are already arranged for binary weights. The teacher stays the original
full-precision model; only the student's weights change.

Every tensor of the converted model whose name the other run's ``model``
has is copied (a name with another shape there is an error: another
network), except the EDE schedule's ``ede_t``/``ede_k`` (this
run's schedule sets them). Tensors the other run lacks (the Bi-Real blocks'
extra parameters when it was 1W/32A, activation thresholds) keep their
converted values; calibration then sets thresholds and BatchNorm statistics
as for any new run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from irconvert.checkpoint import find_checkpoint, load_run_checkpoint
from irconvert.errors import ConfigError, IRConvertError
from irconvert.io.checkpoint_file import file_sha256

__all__ = ["check_init", "init_from_run"]

_SCHEDULE_STATE = ("ede_t", "ede_k")


def _read(source: str) -> tuple[Path, dict[str, Any]]:
    if Path(source).suffix == ".irc":
        raise ConfigError(f"init {source}: a packed .irc keeps the signs, not the latent "
                          "weights training needs; give the run's best.pt or last.pt")
    try:
        path = find_checkpoint(source)
        return path, load_run_checkpoint(path)
    except IRConvertError as exc:
        raise ConfigError(f"init: {exc}") from None


def check_init(source: str) -> None:
    """Fail at once, before any data is read, when ``init`` names no run checkpoint."""
    _read(source)


def init_from_run(model: nn.Module, source: str, arch: str | None) -> dict[str, Any]:
    """Copy ``source``'s fitting tensors into ``model``; what was copied, for the record.

    Args:
        model: the converted model of the new run.
        source: a run checkpoint (``best.pt``, ``last.pt``, ``model.pt``) or
            a run directory.
        arch: the new run's architecture name, when known; a run of another
            architecture is an error.

    Raises:
        ConfigError: one line: the source cannot be read, is not a run
            checkpoint (a packed ``.irc`` keeps signs, not latent weights), is
            another architecture, or shares no tensor with ``model``.
    """
    path, ckpt = _read(source)
    theirs = ckpt.get("arch")
    if arch and theirs and theirs != arch:
        raise ConfigError(f"init {source}: a run of {theirs}, but this run trains {arch}")
    # the averaged weights when the run kept an average: what it evaluated and exported
    state: dict[str, torch.Tensor] = ckpt["model"]
    own = model.state_dict()
    keys = [k for k in own if k.rsplit(".", 1)[-1] not in _SCHEDULE_STATE and k in state]
    odd = [k for k in keys if state[k].shape != own[k].shape]
    if odd:
        k = odd[0]
        raise ConfigError(f"init {source}: {k} is {list(state[k].shape)} there but "
                          f"{list(own[k].shape)} here ({len(odd)} tensors differ): "
                          "another architecture or number of classes?")
    if not keys:
        raise ConfigError(f"init {source}: no tensor of it fits this model (its names "
                          "differ: another architecture?)")
    with torch.no_grad():
        for key in keys:
            own[key].copy_(state[key])
    schedule = sum(k.rsplit(".", 1)[-1] in _SCHEDULE_STATE for k in own)
    return {"source": source, "sha256": file_sha256(path), "arch": theirs,
            "mode": ckpt.get("binarize", {}).get("act_bits"), "copied": len(keys),
            "tensors": len(own), "schedule": schedule}
