"""The input preprocessing an exported file records, so it can be evaluated as trained.

Every export format carries the same small JSON object (when it is known)::

    {"normalization": {"mean": [...], "std": [...]},   # per channel, after ToTensor
     "input_size": [C, H, W],                          # one input, no batch axis
     "eval_resize": 36, "eval_crop": 32}               # the run's eval transform

Each key is optional; a model exported from a checkpoint that recorded no
normalisation (an older or hand-made one) has no ``normalization``. Where it
lives: the ``preprocessing`` entry of a ``.irc`` file's safetensors
``__metadata__``; the ``irconvert.preprocessing`` entry of an ONNX model's
``metadata_props``; ``rt_info["irconvert"]["preprocessing"]`` in OpenVINO IR.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from irconvert.errors import ExportError, LoadError

__all__ = [
    "IRC_KEY",
    "ONNX_KEY",
    "OPENVINO_PATH",
    "check_metadata",
    "decode_metadata",
    "encode_metadata",
    "metadata_from_checkpoint",
]

IRC_KEY = "preprocessing"
ONNX_KEY = "irconvert.preprocessing"
OPENVINO_PATH = ("irconvert", "preprocessing")
_KEYS = ("normalization", "input_size", "eval_resize", "eval_crop")


def _floats(value: Any) -> list[float] | None:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        return None
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _positive_ints(value: Any) -> list[int] | None:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return None
    return [int(v) for v in value]


def _problem(meta: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The cleaned metadata and the first problem found (None when it is valid)."""
    clean: dict[str, Any] = {}
    norm = meta.get("normalization")
    if norm is not None:
        if not isinstance(norm, Mapping):
            return clean, "normalization must be {'mean': [...], 'std': [...]}"
        mean, std = _floats(norm.get("mean")), _floats(norm.get("std"))
        if mean is None or std is None:
            return clean, "normalization needs finite 'mean' and 'std' lists"
        if len(mean) != len(std):
            return clean, f"normalization has {len(mean)} means but {len(std)} stds"
        if any(s <= 0 for s in std):
            return clean, "normalization std values must be > 0"
        clean["normalization"] = {"mean": mean, "std": std}
    size = meta.get("input_size")
    if size is not None:
        sizes = _positive_ints(list(size) if isinstance(size, tuple) else size)
        if sizes is None:
            return clean, f"input_size must be positive integers like [3, 32, 32], not {size!r}"
        clean["input_size"] = sizes
    for key in ("eval_resize", "eval_crop"):
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            return clean, f"{key} must be a positive integer, not {value!r}"
        clean[key] = value
    if "normalization" in clean and "input_size" in clean and len(clean["input_size"]) == 3 \
            and clean["input_size"][0] != len(clean["normalization"]["mean"]):
        return clean, (f"normalization has {len(clean['normalization']['mean'])} channels but "
                       f"input_size has {clean['input_size'][0]}")
    return clean, None


def check_metadata(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Validate preprocessing metadata before export; None when there is nothing to record.

    Unknown keys are refused (a typo would otherwise be lost silently).

    Raises:
        ExportError: a malformed value.
    """
    if not meta:
        return None
    unknown = sorted(set(meta) - set(_KEYS))
    if unknown:
        raise ExportError(f"unknown preprocessing metadata key {unknown[0]!r}; "
                          f"use {', '.join(_KEYS)}")
    clean, problem = _problem(meta)
    if problem:
        raise ExportError(f"bad preprocessing metadata: {problem}")
    return clean or None


def encode_metadata(meta: Mapping[str, Any]) -> str:
    return json.dumps(meta, separators=(",", ":"))


def decode_metadata(text: str | None, where: object) -> dict[str, Any] | None:
    """The preprocessing a file recorded (None when it has none).

    Keys this version does not know are ignored (a newer irconvert may add some).

    Raises:
        LoadError: the recorded value is damaged.
    """
    if text is None or text == "":
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        raise LoadError(f"{where}: damaged preprocessing metadata (not JSON)") from None
    if not isinstance(raw, dict):
        raise LoadError(f"{where}: damaged preprocessing metadata (not an object)")
    clean, problem = _problem(raw)
    if problem:
        raise LoadError(f"{where}: damaged preprocessing metadata ({problem})")
    return clean or None


def metadata_from_checkpoint(
    ckpt: Mapping[str, Any], input_size: Sequence[int] | None = None,
) -> dict[str, Any] | None:
    """What a run checkpoint says about its inputs, in the form exports record.

    ``input_size`` is the size the export is traced with (or the model's own);
    normalisation and the eval resize/crop come from the checkpoint when it
    recorded them.
    """
    meta: dict[str, Any] = {}
    norm = ckpt.get("normalization")
    if isinstance(norm, Mapping) and norm.get("mean") is not None and norm.get("std") is not None:
        meta["normalization"] = {"mean": list(norm["mean"]), "std": list(norm["std"])}
    if input_size is not None:
        meta["input_size"] = [int(v) for v in input_size]
    recipe = ckpt.get("recipe")
    data = recipe.get("data") if isinstance(recipe, Mapping) else None
    if isinstance(data, Mapping):
        for key in ("eval_resize", "eval_crop"):
            if data.get(key):
                meta[key] = int(data[key])
    try:
        return check_metadata(meta)
    except ExportError as exc:
        raise LoadError(f"checkpoint records unusable preprocessing: "
                        f"{str(exc).split(': ', 1)[-1]}") from None
