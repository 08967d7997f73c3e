"""Bit packing: round trips over many shapes, the documented bit order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irconvert.export.bits import pack_signs, packed_nbytes, unpack_signs


@pytest.mark.parametrize("shape", [
    (1,), (7,), (8,), (9,), (1000,), (3, 5), (8, 8), (17, 33), (1, 1, 1, 1), (3, 3, 3, 3),
    (64, 64, 3, 3), (5, 7, 1, 3), (2, 3, 5, 7),
])
def test_round_trip(shape: tuple[int, ...]) -> None:
    values = torch.randn(shape)
    values.view(-1)[0] = 0.0  # sign(0) = +1
    packed = pack_signs(values)
    assert packed.dtype == np.uint8 and packed.size == packed_nbytes(values.numel())
    signs = unpack_signs(packed, shape)
    assert signs.shape == values.shape and signs.dtype == torch.float32
    expected = torch.where(values >= 0, 1.0, -1.0)
    assert torch.equal(signs, expected)


def test_bit_order_is_lsb_first_row_major() -> None:
    # element i -> bit i % 8 of byte i // 8; +1 -> 1; the last byte is zero-padded.
    values = torch.tensor([[1.0, -1.0, -1.0, 1.0, -1.0], [-1.0, -1.0, 0.0, 1.0, 1.0]])
    packed = pack_signs(values)
    flat = [1, 0, 0, 1, 0, 0, 0, 1, 1, 1]
    first = sum(b << i for i, b in enumerate(flat[:8]))
    second = sum(b << i for i, b in enumerate(flat[8:]))
    assert packed.tolist() == [first, second]


def test_wrong_byte_count() -> None:
    with pytest.raises(ValueError, match="packed bytes"):
        unpack_signs(np.zeros(3, np.uint8), (5, 5))
