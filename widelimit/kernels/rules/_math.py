"""Numerically safe primitives shared by the kernel rules."""
from __future__ import annotations

import math

import torch
from torch import Tensor

PI = math.pi


class _SafeSqrt(torch.autograd.Function):
    """sqrt(max(x, 0)) whose gradient is 0 (not inf/NaN) where x <= 0.

    Needed on the diagonal of a kernel, where ``v1 v2 - c12**2`` is exactly 0:
    without it, gradients w.r.t. W_std, b_std or the inputs would be NaN.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = torch.sqrt(torch.clamp(x, min=0))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return torch.where(y > 0, g / (2 * torch.where(y > 0, y, torch.ones_like(y))), torch.zeros_like(g))


def safe_sqrt(x: Tensor) -> Tensor:
    if x.requires_grad:
        return _SafeSqrt.apply(x)
    return torch.sqrt(torch.clamp(x, min=0))


def angle(c12: Tensor, v1: Tensor, v2: Tensor) -> tuple[Tensor, Tensor]:
    """``(theta, delta)`` with ``delta = sqrt(v1 v2 - c12^2)`` and ``theta = atan2(delta, c12)``.

    theta is the angle between the two Gaussian inputs, in [0, pi]; atan2 keeps it
    accurate for nearly collinear inputs where arccos(c / sqrt(v1 v2)) is not.
    The radicand is shrunk by 4 ulp of ``v1 v2`` (its own rounding error): a pair that is
    collinear up to rounding (an input with itself, or a duplicate whose inner products
    came from different positions of a GEMM) gets ``delta = 0`` exactly instead of the
    square root of rounding noise (1e-8 in float64, 3e-4 in float32); any other pair
    changes by less than the rounding error its radicand already carries.  The factor goes on the (N1, 1) vector ``v1``, not on
    the (N1, N2) matrix, so it costs no pass.
    """
    shrink = 1.0 - 4 * torch.finfo(c12.dtype).eps
    radicand = torch.addcmul((v1 * shrink) * v2, c12, c12, value=-1)   # one pass, not two
    if no_grad_needed(radicand):
        delta = radicand.clamp_(min=0).sqrt_()                         # in place: no allocation
    else:
        delta = safe_sqrt(radicand)
    return torch.atan2(delta, c12), delta


def no_grad_needed(*tensors: Tensor) -> bool:
    """Whether in-place updates of results computed from ``tensors`` are safe for autograd."""
    return not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors)
