"""The ``.irc`` container: a safetensors file, checked before it is trusted.

What a packed file holds (:class:`PackedInfo`, its size accounting), the
checks that turn every kind of damage (empty, cut short, not safetensors, a
tensor index that does not fit the bytes, a changed byte anywhere) into one
line naming the file, and the sha256 digest that catches the last of those.
The format itself is :mod:`irconvert.export.packed`'s.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irconvert.errors import LoadError

__all__ = [
    "AGAIN",
    "DIGEST_KEY",
    "PackedInfo",
    "PackedSize",
    "TensorRow",
    "payload_digest",
    "read_header",
]

DIGEST_KEY = "sha256"


@dataclass
class PackedSize:
    """Size accounting of a ``.irc`` file, in bytes.

    ``theoretical`` is the least any file can hold: 1 bit per binary weight
    (rounded up to a byte per layer), one int8 exponent per binary output
    channel, every other tensor at its own width (fp32), plus the metadata.
    ``index`` is what safetensors adds (tensor names, dtypes, offsets, the
    8-byte header length and alignment padding).
    """

    bits: int = 0
    exponents: int = 0
    floats: int = 0
    metadata: int = 0
    index: int = 0

    @property
    def payload(self) -> int:
        return self.bits + self.exponents + self.floats

    @property
    def theoretical(self) -> int:
        return self.payload + self.metadata

    @property
    def actual(self) -> int:
        return self.theoretical + self.index

    @property
    def overhead(self) -> float:
        """``actual / theoretical - 1`` (0.01 is 1 % above the minimum)."""
        return self.actual / self.theoretical - 1 if self.theoretical else 0.0


@dataclass
class TensorRow:
    name: str
    dtype: str
    shape: list[int]
    nbytes: int


@dataclass
class PackedInfo:
    """What :func:`describe_packed` reads from a ``.irc`` file."""

    path: str
    arch: str
    num_classes: int
    format_version: int
    binarize: dict[str, Any]
    layers: dict[str, dict[str, Any]]
    tensors: list[TensorRow] = field(default_factory=list)
    size: PackedSize = field(default_factory=PackedSize)
    preprocessing: dict[str, Any] | None = None
    sha256: str | None = None  # the stored digest (checked on load); None in older files


def payload_digest(header: dict[str, Any], data: bytes) -> str:
    """sha256 of a ``.irc`` header (less its own digest) and its tensor bytes."""
    meta = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != DIGEST_KEY}
    head = {**header, "__metadata__": meta}
    h = hashlib.sha256(json.dumps(head, sort_keys=True, separators=(",", ":")).encode())
    h.update(data)
    return h.hexdigest()


# Bytes per element of the safetensors dtypes a packed file can hold.
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_MAX_HEADER = 100_000_000  # safetensors' own limit
AGAIN = "export it again, or copy it again if it was copied"


def read_header(path: Path, *, verify: bool = True) -> tuple[int, dict[str, Any]]:
    """The safetensors header of ``path``, checked against the file's size and digest.

    Every way a file can be damaged (empty, cut short, not safetensors at all,
    a header whose tensors do not fit the bytes that follow it) is a one-line
    LoadError naming the file, before any reader trusts an offset in it.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(9)
            if size == 0:
                raise LoadError(f"{path}: empty file (0 bytes), not an .irc model; {AGAIN}")
            (length,) = struct.unpack("<Q", prefix[:8]) if size >= 8 else (0,)
            if size < 9 or prefix[8:9] != b"{" or length > _MAX_HEADER:
                if prefix.startswith(b"PK\x03\x04") or prefix[:1] == b"\x80":
                    raise LoadError(f"{path}: not an .irc file but a PyTorch checkpoint "
                                    "(torch.save); `irconvert export --format packed` makes "
                                    "an .irc from a run checkpoint")
                raise LoadError(f"{path}: not an .irc file (no safetensors header; "
                                "`irconvert export --format packed` writes them)")
            if length > size - 8:
                raise LoadError(f"{path}: truncated ({size:,} bytes; its header alone needs "
                                f"{length + 8:,}); {AGAIN}")
            fh.seek(8)
            raw = fh.read(length)
    except OSError as exc:
        raise LoadError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        header = json.loads(raw)
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise LoadError(f"{path}: damaged .irc file (its header is not valid JSON); {AGAIN}")
    _check_extents(path, header, size, 8 + length)
    meta = header.get("__metadata__")
    stored = meta.get(DIGEST_KEY) if isinstance(meta, dict) else None
    if verify and stored is not None:
        with path.open("rb") as fh:
            fh.seek(8 + length)
            if payload_digest(header, fh.read()) != stored:
                raise LoadError(f"{path}: damaged .irc file (its sha256 digest does not match "
                                f"its contents: bytes changed after it was written); {AGAIN}")
    return length, header


def _check_extents(path: Path, header: dict[str, Any], size: int, data_start: int) -> None:
    """Every tensor's offsets lie in the file, sized as its dtype and shape say."""
    data_bytes = size - data_start
    end_max = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = (int(v) for v in entry["data_offsets"])
            shape = [int(d) for d in entry["shape"]]
            itemsize = _ITEMSIZE[entry["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise LoadError(f"{path}: damaged .irc file (bad index entry for tensor "
                            f"{name!r}); {AGAIN}") from None
        if not 0 <= start <= end or end - start != itemsize * math.prod(shape):
            raise LoadError(f"{path}: damaged .irc file (tensor {name!r} has offsets "
                            f"that do not match its shape); {AGAIN}")
        end_max = max(end_max, end)
    if end_max > data_bytes:
        raise LoadError(f"{path}: truncated ({size:,} bytes; its header says "
                        f"{data_start + end_max:,}); {AGAIN}")
    if end_max < data_bytes:
        raise LoadError(f"{path}: damaged .irc file ({data_bytes - end_max:,} bytes after "
                        f"the last tensor); {AGAIN}")
