"""Reading a checkpoint file and unwrapping the state_dict it holds.

Handles torch zip and legacy pickles (always onto the CPU: shared weights are
often saved on CUDA), ``.safetensors``, training checkpoints that hold the
weights under ``state_dict``/``model``/..., and the ``module.``/``_orig_mod.``
prefixes that ``DataParallel`` and ``torch.compile`` add. These are users'
full-precision files; irconvert's own run checkpoints are recognised with
:mod:`irconvert.checkpoint` and sent there.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from irconvert.errors import LoadError

# The marker of an irconvert run checkpoint (irconvert.checkpoint writes it).
# Defined here, below the checkpoint module, so that the reader can tell a
# run checkpoint from a user's model without importing it (no cycle).
FORMAT = "irconvert-checkpoint"


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is an irconvert run checkpoint (it has the format marker)."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT

__all__ = [
    "CONTAINER_KEYS",
    "FORMAT",
    "clean_state_dict",
    "file_sha256",
    "is_checkpoint",
    "load_state_dict_file",
    "read_checkpoint",
]

# Plain weights before EMA weights: the EMA copy is a choice the user makes by
# exporting it, and most training scripts resume from the plain one.
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network",
                  "state_dict_ema", "model_ema")
# Wrappers that prefix every key; they can nest (compile of a DataParallel model).
PREFIXES = ("module.", "_orig_mod.")
PROTOCOLS = (b"\x02", b"\x03", b"\x04", b"\x05")  # pickle protocols torch.save writes
_TRUST_HINT = ("pass --trust-pickle (CLI) or trust_pickle=True (API) if you trust this file, "
               "or re-save it as a state_dict")


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_path(path: Path) -> None:
    if not path.exists():
        raise LoadError(f"{path}: no such file; pass a checkpoint path or a model name")
    if path.is_dir():
        raise LoadError(f"{path} is a directory; pass the checkpoint file inside it")
    if path.stat().st_size == 0:
        raise LoadError(f"{path} is empty (0 bytes); the download or save was interrupted")


def _is_safetensors(path: Path, head: bytes) -> bool:
    # 8-byte little-endian header length, then a JSON object.
    return path.suffix == ".safetensors" or (
        not _looks_like_torch(head) and len(head) > 9 and head[8:9] == b"{"
    )


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ... : damage either way
        raise LoadError(f"{path}: not a readable .safetensors file ({_first_line(exc)}); "
                        "it may be truncated or corrupt") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _looks_like_torch(head: bytes) -> bool:
    # Zip archive (torch >= 1.6) or a raw pickle (legacy format starts with the
    # protocol opcode 0x80).
    return head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in PROTOCOLS)


def read_checkpoint(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> Any:
    """Read a checkpoint file as it is stored: a dict, a state_dict or a module.

    Loads with ``weights_only=True`` unless ``trust_pickle`` is set, always
    onto the CPU.

    Raises:
        LoadError: the file is missing, empty, truncated, not a checkpoint, or
            needs code execution and ``trust_pickle`` is False.
    """
    p = Path(path)
    _check_path(p)
    with open(p, "rb") as fh:
        head = fh.read(16)
    if _is_safetensors(p, head):
        return _read_safetensors(p)
    if not _looks_like_torch(head):
        raise LoadError(f"{p} is not a PyTorch checkpoint (expected a .pth/.pt/.th/.bin "
                        "written by torch.save, or a .safetensors file)")
    if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(p):
        raise LoadError(f"{p} is truncated or corrupt (its zip directory is missing); "
                        "download or save it again")
    try:
        return torch.load(p, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        # weights_only wraps every failure, corrupt bytes included; only a
        # refused class reference means the file is fine but needs trust.
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if not trust_pickle and refused:
            raise LoadError(f"{p} needs code execution to load (it pickles Python objects "
                            f"such as {refused.group(1)}); {_TRUST_HINT}") from None
        raise _corrupt(p, exc) from None
    except (AttributeError, ModuleNotFoundError, ImportError) as exc:
        # Trusted pickles name their classes; they must be importable here.
        raise LoadError(f"{p}: the pickled model's code is not importable here "
                        f"({_first_line(exc)}); import the module that defines it first, "
                        "or re-save the model as a state_dict") from None
    except Exception as exc:
        # Damaged bytes fail the unpickler in data-dependent ways (EOFError,
        # IndexError, RuntimeError, ...): all mean the same to the user.
        raise _corrupt(p, exc) from None


def _corrupt(path: Path, exc: BaseException) -> LoadError:
    return LoadError(f"{path} could not be read as a PyTorch checkpoint ({_first_line(exc)}); "
                     "it may be truncated or corrupt: download or save it again")


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()))


def _summary(value: Any) -> Any:
    """A JSON-friendly glimpse of a checkpoint's non-weight entry."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value if not isinstance(value, str) or len(value) < 200 else value[:200] + "..."
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    return type(value).__name__


def _unwrap(
    obj: Any, path: str, info: dict[str, Any], depth: int = 0,
) -> dict[str, Tensor] | nn.Module:
    if isinstance(obj, nn.Module):
        return obj
    if _is_state_dict(obj):
        return dict(obj)
    if not isinstance(obj, Mapping):
        raise LoadError(f"{path} holds a {type(obj).__name__}, not a state_dict or model; "
                        "save model.state_dict() instead")
    if is_checkpoint(obj):
        raise LoadError(f"{path} is an irconvert run checkpoint of a binarized model; pass it "
                        "to the commands that resume or export runs, or give the "
                        "full-precision model here")
    for key in CONTAINER_KEYS:
        inner = obj.get(key)
        found: dict[str, Tensor] | nn.Module
        if isinstance(inner, nn.Module):
            found = inner
        elif _is_state_dict(inner):
            found = dict(inner)  # type: ignore[arg-type]  # checked by _is_state_dict
        elif isinstance(inner, Mapping) and inner and depth < 2:
            try:  # a checkpoint inside a checkpoint, e.g. {"model": {"state_dict": ...}}
                found = _unwrap(inner, path, info, depth + 1)
            except LoadError:
                continue  # e.g. "model": {its config}, not weights
        else:
            continue
        info["container"].insert(0, key)
        if depth == 0:
            info["extra_keys"] = {k: _summary(v) for k, v in obj.items() if k != key}
        return found
    keys = ", ".join(map(str, list(obj)[:8]))
    raise LoadError(f"{path}: no state_dict found (top-level keys: {keys}); expected the "
                    f"weights at the top level or under one of {', '.join(CONTAINER_KEYS)}")


def clean_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Strip wrapper prefixes shared by every key; return the dict and what was stripped."""
    sd = dict(state_dict)
    stripped: list[str] = []
    changed = True
    while changed and sd:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                stripped.append(prefix)
                changed = True
    return sd, stripped


def load_state_dict_file(
    path: str | os.PathLike[str], *, trust_pickle: bool = False,
) -> tuple[dict[str, Tensor] | nn.Module, dict[str, Any]]:
    """Read a checkpoint and return its weights (or pickled module) plus facts about it.

    Args:
        path: a ``.pth``/``.pt``/``.th``/``.bin``/``.safetensors`` file.
        trust_pickle: allow files that need code execution (a pickled module).

    Returns:
        ``(weights, info)``: a state_dict with wrapper prefixes removed, or an
        ``nn.Module``; ``info`` has ``format`` (``state_dict``,
        ``checkpoint:<key>``, ``safetensors``, ``pickled-module``),
        ``extra_keys`` (the checkpoint's other entries, e.g. ``best_prec1``)
        and ``stripped_prefixes``.

    Raises:
        LoadError: see :func:`read_checkpoint`; also when no weights are found.

    Example:
        >>> sd, info = load_state_dict_file("resnet20.th")  # doctest: +SKIP
        >>> info["format"], info["extra_keys"]
        ('checkpoint:state_dict', {'best_prec1': 91.73})
    """
    obj = read_checkpoint(path, trust_pickle=trust_pickle)
    info: dict[str, Any] = {"extra_keys": {}, "stripped_prefixes": [], "container": []}
    is_st = _is_safetensors(Path(path), _head(path))
    weights = _unwrap(obj, str(path), info)
    container = info.pop("container")
    if isinstance(weights, nn.Module):
        info["format"] = "pickled-module"
    elif is_st:
        info["format"] = "safetensors"
    elif container:
        info["format"] = "checkpoint:" + "/".join(container)
    else:
        info["format"] = "state_dict"
    if isinstance(weights, nn.Module):
        return weights, info
    weights, info["stripped_prefixes"] = clean_state_dict(weights)
    return weights, info


def _head(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(16)
