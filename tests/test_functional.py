"""IR-Net math against hand-computed values and against autograd of the analytic form."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from irconvert.functional import (
    binary_sign,
    ede_schedule,
    ede_sign,
    libra_pb,
    libra_pb_reference,
    pow2_scale,
    standardize,
)

# ---------------------------------------------------------------- hand-computed values


def test_binary_sign_two_valued_with_zero_positive() -> None:
    x = torch.tensor([-2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0])
    # -0.0 >= 0 in IEEE arithmetic: both zeros map to +1.
    assert binary_sign(x).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]


def test_standardize_rows_unbiased() -> None:
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 6.0]], dtype=torch.float64)
    # row 0: mean 2.5, unbiased var 5/3 -> std 1.2909944; row 1: mean 3, var 4 -> std 2
    a, b = 1.161895003862225, 0.3872983346207417
    expected = torch.tensor([[-a, -b, b, a], [-0.5, -0.5, -0.5, 1.5]], dtype=torch.float64)
    torch.testing.assert_close(standardize(w), expected)
    # conv-shaped: per output channel over (in, kh, kw)
    torch.testing.assert_close(standardize(w.view(2, 1, 2, 2)), expected.view(2, 1, 2, 2))


@pytest.mark.parametrize(
    ("row", "scale"),
    [
        ([0.8, -0.8], 1.0),  # log2 0.8 = -0.32 -> 0
        ([0.3, -0.3], 0.25),  # log2 0.3 = -1.74 -> -2
        ([0.5, 0.5], 0.5),  # exactly -1
        ([0.7, -0.7], 0.5),  # log2 0.7 = -0.51 -> -1
        ([1.5, -1.5], 2.0),  # log2 1.5 = 0.58 -> 1
        ([3.0, -3.0], 4.0),  # log2 3 = 1.58 -> 2
        ([0.2, -1.4], 1.0),  # mean 0.8
    ],
)
def test_pow2_scale_values(row: list[float], scale: float) -> None:
    out = pow2_scale(torch.tensor([row]))
    assert out.shape == (1, 1)
    assert out.item() == scale


def test_pow2_scale_per_channel_and_detached() -> None:
    w_hat = torch.tensor([[[[0.8, -0.8]]], [[[0.3, 0.3]]]], requires_grad=True)
    out = pow2_scale(w_hat)
    assert out.shape == (2, 1, 1, 1)
    assert out.flatten().tolist() == [1.0, 0.25]
    assert not out.requires_grad


@pytest.mark.parametrize(
    ("t", "k", "x", "grad"),
    [
        (1.0, 1.0, 0.0, 1.0),
        (2.0, 1.0, 0.5, 0.8399486832280523),  # 2 * (1 - tanh(1)^2)
        (10.0, 1.0, 0.1, 4.199743416140262),
        (10.0, 1.0, -0.1, 4.199743416140262),
        (10.0, 1.0, 0.0, 10.0),
        (0.1, 10.0, 0.0, 1.0),
        (0.1, 10.0, 3.0, 0.9151369618266292),  # 1 - tanh(0.3)^2
        (0.001, 1000.0, 2.0, 0.9999960000106667),
    ],
)
def test_ede_gradient_hand_values(t: float, k: float, x: float, grad: float) -> None:
    xt = torch.tensor([x], dtype=torch.float64, requires_grad=True)
    y = ede_sign(xt, t, k)
    assert y.item() == (1.0 if x >= 0 else -1.0)
    y.sum().backward()
    assert xt.grad is not None
    assert xt.grad.item() == pytest.approx(grad, rel=1e-12)


@pytest.mark.parametrize(
    ("t_min", "t_max", "frac", "t", "k"),
    [
        (0.1, 10.0, 0.0, 0.1, 10.0),
        (0.1, 10.0, 0.5, 1.0, 1.0),
        (0.1, 10.0, 1.0, 10.0, 1.0),
        (0.001, 10.0, 0.0, 0.001, 1000.0),
        (0.001, 10.0, 0.5, 0.1, 10.0),
        (0.001, 10.0, 1.0, 10.0, 1.0),
        (0.001, 10.0, 0.25, 0.01, 100.0),
    ],
)
def test_ede_schedule_values(t_min: float, t_max: float, frac: float, t: float, k: float) -> None:
    epochs = 400
    got_t, got_k = ede_schedule(frac * epochs, epochs, t_min, t_max)
    assert got_t == pytest.approx(t, rel=1e-12)
    assert got_k == pytest.approx(k, rel=1e-12)


def test_ede_schedule_default_is_paper() -> None:
    assert ede_schedule(0, 10) == pytest.approx((0.1, 10.0))


@pytest.mark.parametrize(("epochs", "t_min", "t_max"), [(0, 0.1, 10.0), (10, 0.0, 10.0),
                                                        (10, 10.0, 0.1)])
def test_ede_schedule_rejects_bad_arguments(epochs: int, t_min: float, t_max: float) -> None:
    with pytest.raises(ValueError):
        ede_schedule(0, epochs, t_min, t_max)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # standardized: [-1.16, -0.39, 0.39, 1.16], mean|.| 0.77 -> s = 1
        ([1.0, 2.0, 3.0, 4.0], [-1.0, -1.0, 1.0, 1.0]),
        # standardized: [-0.5, -0.5, -0.5, 1.5], mean|.| 0.75 -> s = 1
        ([2.0, 2.0, 2.0, 6.0], [-1.0, -1.0, -1.0, 1.0]),
        # heavy tail: std 3.5355, w_hat [-0.354 x7, 2.475], mean|.| 0.619 -> s = 0.5
        ([0.0] * 7 + [10.0], [-0.5] * 7 + [0.5]),
        # w_hat = [-1, 0, 1]: sign(0) = +1, mean|.| 2/3 -> s = 0.5
        ([1.0, 2.0, 3.0], [-0.5, 0.5, 0.5]),
    ],
)
def test_libra_pb_forward_hand_values(row: list[float], expected: list[float]) -> None:
    w = torch.tensor([row], dtype=torch.float64)
    assert libra_pb(w, 1.0, 1.0).flatten().tolist() == expected
    assert libra_pb_reference(w, 1.0, 1.0).flatten().tolist() == expected


def test_libra_pb_is_invariant_to_shift_and_positive_scale() -> None:
    w = torch.randn(6, 3, 3, 3)
    torch.testing.assert_close(libra_pb(w, 1.0, 1.0), libra_pb(3.0 * w + 7.0, 1.0, 1.0))


# ------------------------------------------------- fused vs reference vs analytic surrogate

SHAPES = [(4, 3, 3, 3), (8, 2, 1, 1), (3, 4, 5, 1), (5, 7), (2, 2), (16, 32)]
TK = [(0.1, 10.0), (1.0, 1.0), (3.0, 1.0), (10.0, 1.0), (0.001, 1000.0)]


def _surrogate(w: Tensor, t: float, k: float) -> Tensor:
    """sign replaced by k * tanh(t x): what the EDE backward must be the derivative of."""
    dims = tuple(range(1, w.dim()))
    centered = w - w.mean(dim=dims, keepdim=True)
    w_hat = centered / centered.std(dim=dims, keepdim=True)
    scale = 2.0 ** torch.round(torch.log2(w_hat.detach().abs().mean(dim=dims, keepdim=True)))
    return k * torch.tanh(t * w_hat) * scale


def _grad(fn: object, w: Tensor, upstream: Tensor) -> tuple[Tensor, Tensor]:
    w = w.detach().clone().requires_grad_(True)
    out = fn(w)  # type: ignore[operator]
    (g,) = torch.autograd.grad(out, w, upstream)
    return out.detach(), g


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(("t", "k"), TK, ids=str)
def test_libra_pb_fused_matches_reference_and_surrogate(
    shape: tuple[int, ...], t: float, k: float
) -> None:
    gen = torch.Generator().manual_seed(hash((shape, t)) % 2**31)
    w = torch.randn(shape, generator=gen, dtype=torch.float64) * 0.1 + 0.02
    upstream = torch.randn(shape, generator=gen, dtype=torch.float64)

    fused_out, fused_grad = _grad(lambda x: libra_pb(x, t, k), w, upstream)
    ref_out, ref_grad = _grad(lambda x: libra_pb_reference(x, t, k), w, upstream)
    _, sur_grad = _grad(lambda x: _surrogate(x, t, k), w, upstream)

    torch.testing.assert_close(fused_out, ref_out, rtol=0, atol=0)
    torch.testing.assert_close(fused_grad, ref_grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fused_grad, sur_grad, rtol=1e-10, atol=1e-12)


def test_surrogate_oracle_passes_gradcheck() -> None:
    """The oracle itself is checked against finite differences (float64)."""
    w = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: _surrogate(x, 2.0, 1.0), (w,))


def test_libra_pb_gradient_accepts_tensor_t_k() -> None:
    w = torch.randn(4, 9, dtype=torch.float64)
    upstream = torch.randn(4, 9, dtype=torch.float64)
    t, k = torch.tensor(2.0), torch.tensor(1.5)  # float32 buffers, float64 weights
    _, g_tensor = _grad(lambda x: libra_pb(x, t, k), w, upstream)
    _, g_float = _grad(lambda x: libra_pb(x, 2.0, 1.5), w, upstream)
    torch.testing.assert_close(g_tensor, g_float)


@pytest.mark.parametrize(("t", "k"), TK, ids=str)
def test_ede_sign_gradient_equals_autograd_of_tanh(t: float, k: float) -> None:
    x = torch.tensor([-2.0, -0.3, -1e-3, 0.0, 1e-3, 0.3, 2.0], dtype=torch.float64)
    upstream = torch.linspace(0.5, 2.0, 7, dtype=torch.float64)
    out, g = _grad(lambda v: ede_sign(v, t, k), x, upstream)
    _, g_ref = _grad(lambda v: k * torch.tanh(t * v), x, upstream)
    assert out.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
    # atol: where t * x = 20, autograd's 1 - tanh^2 has cancelled to 0 or 2e-16
    # (the true value is 1.7e-17); elsewhere the two agree to 1e-12.
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=5e-16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ede_gradient_is_accurate_in_the_tails(dtype: torch.dtype) -> None:
    """sech^2 without cancellation: relative error ~ eps even where tanh rounds to 1."""
    x = torch.linspace(-12.0, 12.0, 2401, dtype=torch.float64)
    t, k = 2.0, 1.0
    exact = k * t / torch.cosh(t * x) ** 2  # float64: accurate here, cosh(24) ~ 1e10
    x_in = x.to(dtype).requires_grad_(True)
    ede_sign(x_in, t, k).sum().backward()
    assert x_in.grad is not None
    rel = ((x_in.grad.double() - exact).abs() / exact).max().item()
    assert rel < (1e-5 if dtype == torch.float32 else 1e-12), rel


def test_libra_pb_constant_channel_is_finite() -> None:
    """std = 0 (e.g. a zero-initialised channel): finite output and gradient, no NaN."""
    w = torch.zeros(2, 4, dtype=torch.float64)
    w[1] = torch.tensor([1.0, -1.0, 2.0, -2.0])
    w.requires_grad_(True)
    out = libra_pb(w, 1.0, 1.0)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    # w_hat = 0 -> mean|w_hat| = 0 -> scale 0: a dead (all-zero) channel, no NaN
    assert out[0].tolist() == [0.0] * 4 and w.grad[0].tolist() == [0.0] * 4
    assert out[1].tolist() == [1.0, -1.0, 1.0, -1.0]
