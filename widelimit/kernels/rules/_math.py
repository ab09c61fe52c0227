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
    """
    delta = safe_sqrt(v1 * v2 - c12 * c12)
    return torch.atan2(delta, c12), delta
