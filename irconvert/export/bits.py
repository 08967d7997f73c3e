"""Bit packing of binary weights: 1 bit per weight, 8 per byte.

Layout (the ``.irc`` format and the packed ONNX graph use the same one):
the weight tensor is flattened in row-major (C) order, element ``i`` goes to
byte ``i // 8``, bit ``i % 8`` counted from the least significant bit
(little-endian within the byte, ``numpy.packbits(..., bitorder="little")``).
A set bit means ``+1``, a clear bit ``-1``; ``sign(0) = +1``, so a zero maps
to a set bit. The last byte is zero-padded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["BIT_ORDER", "pack_signs", "packed_nbytes", "unpack_signs"]

BIT_ORDER: Final[Literal["little"]] = "little"


def packed_nbytes(numel: int) -> int:
    """Bytes that ``numel`` packed bits take (rounded up to a whole byte)."""
    return math.ceil(numel / 8)


def pack_signs(values: Tensor | np.ndarray) -> np.ndarray:
    """Pack the signs of ``values`` (``>= 0`` -> bit 1) into a flat uint8 array.

    Args:
        values: any shape; only the sign matters (``sign(0) = +1``).

    Returns:
        ``uint8`` array of ``ceil(numel / 8)`` bytes.
    """
    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    bits = (arr.reshape(-1) >= 0).astype(np.uint8)
    return np.packbits(bits, bitorder=BIT_ORDER)


def unpack_signs(packed: np.ndarray | Tensor, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`pack_signs`: a float32 tensor of +-1 with ``shape``.

    Raises:
        ValueError: ``packed`` has the wrong number of bytes for ``shape``.
    """
    arr = packed.cpu().numpy() if isinstance(packed, Tensor) else np.asarray(packed)
    arr = arr.astype(np.uint8, copy=False).reshape(-1)
    numel = math.prod(shape)
    if arr.size != packed_nbytes(numel):
        raise ValueError(f"{arr.size} packed bytes do not hold a {list(shape)} tensor "
                         f"(need {packed_nbytes(numel)})")
    bits = np.unpackbits(arr, count=numel, bitorder=BIT_ORDER)
    signs = bits.astype(np.float32) * 2.0 - 1.0
    return torch.from_numpy(signs.reshape(tuple(shape)))
