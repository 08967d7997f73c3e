"""IR-Net math as pure functions: Libra-PB, the EDE sign and the EDE schedule.

Reference: Qin et al., "Forward and Backward Information Retention for
Accurate Binary Neural Networks", CVPR 2020 (``../shared/docs/irnet-spec.md``).

Sign convention: ``sign(0) = +1`` everywhere (training, freezing, export).
A packed bit has only two values, so a zero must map to one of them; choosing
it in training too means an exported model reproduces the training-time
forward pass exactly instead of differing on every weight or activation that
happens to be exactly zero (ReLU outputs, zero-initialised weights).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "binary_sign",
    "ede_schedule",
    "ede_sign",
    "libra_pb",
    "libra_pb_reference",
    "pow2_scale",
    "standardize",
]

# A channel whose weights are all equal has std 0; the authors' code divides by
# zero there (NaN). The floor keeps such a channel finite and changes nothing
# for any channel with a real spread: its w_hat is 0, so mean|w_hat| = 0 gives
# the scale 2 ** -inf = 0, and the channel is all zeros with zero gradient.
_STD_FLOOR = 1e-12
_NEG_2_LOG2_E = -2.0 / math.log(2.0)


def binary_sign(x: Tensor) -> Tensor:
    """``sign(x)`` with ``sign(0) = +1``: the two-valued sign used everywhere."""
    # 2 * [x >= 0] - 1: the same values as torch.where(x >= 0, 1, -1) (NaN -> -1
    # too) at a third of the CPU cost; the mask is the only extra allocation.
    return (x >= 0).to(x.dtype).mul_(2).sub_(1)


def _channel_dims(w: Tensor) -> tuple[int, ...]:
    return tuple(range(1, w.dim()))


def standardize(w: Tensor) -> Tensor:
    """Libra-PB balance and standardize, per output channel (dim 0).

    ``w_hat = (w - mean_c(w)) / std_c(w - mean_c(w))`` with the unbiased std.
    Differentiable: the gradient flows through mean and std.
    """
    dims = _channel_dims(w)
    centered = w - w.mean(dim=dims, keepdim=True)
    std = centered.std(dim=dims, keepdim=True).clamp_min(_STD_FLOOR)
    return centered / std


def pow2_scale(w_hat: Tensor) -> Tensor:
    """Detached per-channel power-of-two scale ``2 ** round(log2(mean|w_hat|))``."""
    dims = _channel_dims(w_hat)
    mean_abs = w_hat.detach().abs().mean(dim=dims, keepdim=True)
    return torch.pow(2.0, torch.round(torch.log2(mean_abs)))


def _ede_grad(x: Tensor, t: Tensor, k: Tensor) -> Tensor:
    """EDE derivative ``k * t * (1 - tanh(t * x) ** 2)``.

    Computed as ``4 k t z / (1 + z) ** 2`` with ``z = exp(-2 |t x|)``: the
    same function (``1 - tanh(y) ** 2 = sech(y) ** 2``) with one exponential
    and no cancellation. ``1 - tanh ** 2`` loses every digit where ``tanh``
    rounds to +-1 (it returns 0 for |y| > 9 in fp32, and in bf16 already
    from |y| ~ 3); this form stays within 6e-6 relative in fp32 up to |y| = 24
    (mostly the rounding of ``t x`` itself, which grows with |y|). It is
    also the cheaper one: vectorised ``exp`` costs about half of ``tanh`` on
    CPU, and this runs over every binarized activation in every backward.
    ``z`` is taken as ``exp2(-2 |t x| / ln 2)``: the same value to a few
    ulp, and the compiled CPU kernel around it is ~5% faster than with
    ``exp`` (``benchmarks/ede_kernel.py``; under 1% of a training step).
    """
    z = torch.exp2((t * x).abs_().mul_(_NEG_2_LOG2_E))
    return z.mul(4 * k * t).div_((z + 1).square_())


class _EDESign(torch.autograd.Function):
    """sign forward, EDE derivative backward (spec: "Backward: EDE")."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, t: Tensor, k: Tensor) -> Tensor:
        ctx.save_for_backward(x, t, k)
        # ``+ 0 * x`` keeps every value (0 * finite = 0) but lets a NaN or inf
        # through as NaN: in training a diverged activation must reach the
        # loss (which stops the run) instead of silently becoming a -1 bit.
        return binary_sign(x).add_(x * 0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        x, t, k = ctx.saved_tensors
        return _ede_grad(x, t, k).mul_(grad), None, None


def ede_sign(x: Tensor, t: Tensor | float, k: Tensor | float) -> Tensor:
    """Binarize ``x`` to +-1 (``sign(0) = +1``) with the EDE gradient.

    Forward: ``sign(x)``. Backward: ``grad * k * t * (1 - tanh(t * x) ** 2)``.

    Args:
        x: any tensor.
        t: EDE temperature (scalar or 0-d tensor).
        k: EDE gain (scalar or 0-d tensor).
    """
    t_ = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    k_ = torch.as_tensor(k, dtype=x.dtype, device=x.device)
    out: Tensor = _EDESign.apply(x, t_, k_)
    return out


class _LibraPB(torch.autograd.Function):
    """Fused Libra-PB weight binarization: standardize, EDE sign, pow2 scale.

    One node in the autograd graph instead of a dozen (mean, sub, std, div,
    sign, log2, ...). The backward is the analytic gradient of the unfused
    expression: with ``g = grad * s * ede'(w_hat)`` per channel of n elements,
    ``dL/dw = (g - mean(g) - w_hat * sum(g * w_hat) / (n - 1)) / std``.
    The scale is detached, as in the authors' code.
    """

    @staticmethod
    def forward(ctx: Any, w: Tensor, t: Tensor, k: Tensor) -> Tensor:
        dims = _channel_dims(w)
        centered = w - w.mean(dim=dims, keepdim=True)
        std = centered.std(dim=dims, keepdim=True).clamp_min(_STD_FLOOR)
        w_hat = centered / std
        scale = pow2_scale(w_hat)
        ctx.save_for_backward(w_hat, std, scale, t, k)
        return binary_sign(w_hat) * scale

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        w_hat, std, scale, t, k = ctx.saved_tensors
        dims = _channel_dims(w_hat)
        n = max(math.prod(w_hat.shape[1:]), 2)
        g = grad * scale * _ede_grad(w_hat, t, k)
        g_mean = g.mean(dim=dims, keepdim=True)
        proj = (g * w_hat).sum(dim=dims, keepdim=True) / (n - 1)
        return (g - g_mean - w_hat * proj) / std, None, None


def libra_pb(w: Tensor, t: Tensor | float, k: Tensor | float) -> Tensor:
    """Binary weights ``Qw = sign(w_hat) * s`` of Libra-PB, with the EDE backward.

    ``w_hat`` is :func:`standardize` of ``w`` per output channel, ``s`` is
    :func:`pow2_scale` of ``w_hat`` (detached). Equals
    :func:`libra_pb_reference` in value and gradient, in one autograd node.
    """
    t_ = torch.as_tensor(t, dtype=w.dtype, device=w.device)
    k_ = torch.as_tensor(k, dtype=w.dtype, device=w.device)
    out: Tensor = _LibraPB.apply(w, t_, k_)
    return out


def libra_pb_reference(w: Tensor, t: Tensor | float, k: Tensor | float) -> Tensor:
    """Unfused Libra-PB, written as in the spec; kept as the test oracle."""
    w_hat = standardize(w)
    return ede_sign(w_hat, t, k) * pow2_scale(w_hat)


def ede_schedule(
    epoch: float, epochs: float, t_min: float = 0.1, t_max: float = 10.0
) -> tuple[float, float]:
    """EDE ``(t, k)`` at (possibly fractional) ``epoch`` of ``epochs``.

    ``t(e) = 10 ** (log10(T_min) + (log10(T_max) - log10(T_min)) * e / E)``,
    ``k(e) = max(1 / t(e), 1)``. ``e`` is 0-based; a fractional ``e`` gives the
    per-step variant.

    Example:
        >>> ede_schedule(0, 10, 0.1, 10.0)
        (0.1, 10.0)
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    if not 0 < t_min <= t_max:
        raise ValueError(f"need 0 < t_min <= t_max, got t_min={t_min}, t_max={t_max}")
    lo, hi = math.log10(t_min), math.log10(t_max)
    t = 10 ** (lo + (hi - lo) * epoch / epochs)
    return t, max(1.0 / t, 1.0)
