"""Everything irconvert writes: where it goes, what it is called, when it may replace a file.

The one home of these rules; :mod:`irconvert.atomic` holds how a file is
written (aside, then renamed into place, so it appears whole or not at all).

A fine-tuning run directory (``binarize --data D --out RUN``)::

    config.yaml     the resolved recipe (a valid ``--recipe`` file)
    run.yaml        where the model and data came from (for ``--resume``)
    last.pt         run checkpoint + trainer state, after every epoch and on stop
    best.pt         the checkpoint with the best validation top-1
    metrics.jsonl   one JSON object per epoch
    curves.png      loss, accuracy, lr and EDE t per epoch

Without ``--out`` the run goes to a new folder ``runs/<model>-1w1a/`` (or
``-1w32a``), with ``-2``, ``-3``... when that folder is taken.

A conversion without fine-tuning (no ``--data``, or ``--epochs 0``) writes one
``model.pt``: at ``--out`` (a ``.pt`` path, or a folder that gets ``model.pt``),
else at ``runs/<model>-1w1a/model.pt``, numbered the same way. Exports are
named by their format (``.irc``, ``.onnx``, an OpenVINO folder or ``.xml``:
:mod:`irconvert.export.formats`); without ``--out`` they go beside the
checkpoint they read, named after it (``best.pt`` -> ``best.irc``,
``best.onnx``, the folder ``best-openvino/``).

Overwriting: a run directory is never replaced (``--resume`` continues it);
an existing ``model.pt`` or export is replaced only with ``--force``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from irconvert.errors import ConfigError, ExportError

__all__ = [
    "BEST",
    "CONFIG",
    "CURVES",
    "FOLDER_CHECKPOINTS",
    "LAST",
    "METRICS",
    "POSTTRAIN",
    "RUN_FILES",
    "RUN_INFO",
    "RUN_OUTPUTS",
    "check_output",
    "default_export",
    "default_output",
    "default_run_dir",
    "resolve_output",
]

CONFIG = "config.yaml"
RUN_INFO = "run.yaml"
LAST = "last.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
POSTTRAIN = "model.pt"  # the file a conversion writes (in a folder)
# What a run directory needs to be continued, in the order a missing one is named.
RUN_FILES = (LAST, CONFIG, RUN_INFO)
# Every file a fine-tuning run writes (and only those).
RUN_OUTPUTS = (CONFIG, RUN_INFO, LAST, BEST, METRICS, CURVES)
# The checkpoint a folder stands for, in order of preference.
FOLDER_CHECKPOINTS = (BEST, LAST, POSTTRAIN)


def _mode(act_bits: int) -> str:
    return f"1w{act_bits}a"


def _stem(source: str) -> str:
    p = Path(source)
    name = p.stem if p.suffix else p.name or source
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def default_output(source: str, act_bits: int, root: str | os.PathLike[str] = "runs",
                   force: bool = False) -> Path:
    """``runs/<stem>-1w1a/model.pt``, or ``-2``, ``-3``... when that folder is taken.

    A taken folder (any content) is never written into unless ``force``, so
    an earlier conversion or a fine-tuning run there is never replaced.
    """
    base = Path(root) / f"{_stem(source)}-{_mode(act_bits)}"
    if force:
        return base / POSTTRAIN
    return _free_folder(base) / POSTTRAIN


def default_run_dir(source: str, act_bits: int, root: str | os.PathLike[str] = "runs") -> Path:
    """``runs/<stem>-1w1a/`` for a fine-tuning run given no ``--out``; ``-2``, ``-3``... when taken.

    A run directory is never written into twice, so a taken name (an earlier
    run, a conversion's ``model.pt``) moves the new run to the next number.
    """
    return _free_folder(Path(root) / f"{_stem(source)}-{_mode(act_bits)}")


def _free_folder(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``...: the first that is missing or empty."""
    for i in range(1, 1000):
        folder = base if i == 1 else base.with_name(f"{base.name}-{i}")
        if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
            return folder
    raise ConfigError(f"{base}: 999 earlier outputs there; pass --out")


def default_export(checkpoint: Path, suffix: str) -> Path:
    """Where ``export`` writes without ``--out``: beside ``checkpoint``, named after it.

    ``suffix`` is the format's (``.irc``, ``.onnx``; ``""``: an OpenVINO
    folder, ``<stem>-openvino/``). Existing output still needs ``--force``.
    """
    if not suffix:
        return checkpoint.with_name(f"{checkpoint.stem}-openvino")
    return checkpoint.with_suffix(suffix)


def resolve_output(out: str | os.PathLike[str] | None, source: str, act_bits: int,
                   force: bool = False) -> Path:
    """The checkpoint file for ``--out``: a ``.pt`` file, or ``model.pt`` in a folder.

    Raises:
        ConfigError: the file exists and ``force`` is not set.
    """
    if out is None:
        return default_output(source, act_bits, force=force)
    p = Path(out)
    target = p if p.suffix == ".pt" else p / POSTTRAIN
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; pass --force to replace it or choose "
                          "another --out")
    return target


def check_output(path: str | os.PathLike[str], force: bool, *,
                 directory: bool = False) -> Path:
    """``path`` as a Path, checked before any work is done.

    Raises:
        ExportError: it exists and ``force`` is off, or it is a directory
            where a file is wanted (or the reverse).
    """
    out = Path(path)
    if not out.exists():
        return out
    if not force:
        raise ExportError(f"{out} already exists; pass --force to overwrite it")
    if out.is_dir() != directory:
        want, got = ("a directory", "a file") if directory else ("a file", "a directory")
        raise ExportError(f"{out} is {got} but the output must be {want}; choose another path")
    return out
