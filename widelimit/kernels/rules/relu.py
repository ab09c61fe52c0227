"""Rectifier family: ABRelu (Relu, LeakyRelu, Abs), Sign, RectifiedMonomial.

Arc-cosine kernels (Cho & Saul, 2009): for a centred Gaussian pair with
variances v1, v2, covariance c and angle theta,

    E[relu(u) relu(v)] = (sqrt(v1 v2 - c^2) + (pi - theta) c) / (2 pi)
    E[1{u>0} 1{v>0}]  = (pi - theta) / (2 pi)

``ABRelu(a, b) = a min(x, 0) + b max(x, 0) = (b - a) relu(x) + a x`` gives
    T     = (b - a)^2 E[relu relu] + a b c
    T_dot = (b - a)^2 (pi - theta) / (2 pi) + a b.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from widelimit.kernels.rules._math import PI, angle, no_grad_needed

is_compiling = torch.compiler.is_compiling


@functools.lru_cache(maxsize=None)  # one dual object per parameters (stable for torch.compile)
def abrelu_dual(a: float, b: float) -> Callable:
    f = (b - a) ** 2 / (2 * PI)
    ab = a * b

    def dual(c: Tensor, v1: Tensor, v2: Tensor, want_dot: bool):
        theta, delta = angle(c, v1, v2)
        if no_grad_needed(c, v1, v2) and not is_compiling():
            # the same arithmetic in fewer passes over (N1, N2), reusing the buffers
            pi_minus = theta.neg_().add_(PI)
            t = torch.addcmul(delta, pi_minus, c).mul_(f)
            t_dot = pi_minus.mul_(f) if want_dot else None
        else:
            pi_minus = PI - theta
            t = f * (delta + pi_minus * c)
            t_dot = f * pi_minus if want_dot else None
        if ab != 0:
            t = t + ab * c
            t_dot = None if t_dot is None else t_dot + ab
        return t, t_dot
    dual.native = (a, b)  # type: ignore[attr-defined]  # widelimit.kernels._native has a one-pass loop for this dual
    return dual


@functools.lru_cache(maxsize=None)
def sign_dual(c: Tensor, v1: Tensor, v2: Tensor, want_dot: bool):
    """E[sign(u) sign(v)] = 1 - 2 theta / pi; the derivative (a delta) contributes 0,
    as in neural-tangents."""
    theta, _ = angle(c, v1, v2)
    t = 1 - 2 * theta / PI
    # sign(0) = 0: a zero-variance input has a zero output.
    t = torch.where((v1 * v2) == 0, torch.zeros_like(t), t)
    return t, (torch.zeros_like(t) if want_dot else None)


@functools.lru_cache(maxsize=None)
def _arccos_poly(n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Coefficients (P, Q), lowest degree first, with J_n = P(cos t) sin t + Q(cos t) (pi - t).

    J_n is the angular part of the order-n arc-cosine kernel (Cho & Saul 2009),
    J_n = (-1)^n sin^{2n+1}(t) (1/sin d/dt)^n ((pi - t)/sin t).  With x = cos t the
    operator is d/dx, and writing the n-th derivative as
    (Q_n g + P_n sqrt(1-x^2)) / (1-x^2)^{n+1/2} with g = pi - arccos... gives
        Q_{n+1} = Q_n' (1 - x^2) + (2n + 1) x Q_n
        P_{n+1} = Q_n + P_n' (1 - x^2) + 2n x P_n.
    """
    from numpy.polynomial import polynomial as npp
    q, p = np.array([1.0]), np.array([0.0])
    one_minus_x2 = np.array([1.0, 0.0, -1.0])
    x = np.array([0.0, 1.0])
    for k in range(n):
        q_new = npp.polyadd(npp.polymul(npp.polyder(q), one_minus_x2), (2 * k + 1) * npp.polymul(x, q))
        p_new = npp.polyadd(npp.polyadd(q, npp.polymul(npp.polyder(p), one_minus_x2)),
                            2 * k * npp.polymul(x, p))
        q, p = q_new, p_new
    return tuple(float(v) for v in p), tuple(float(v) for v in q)


def _polyval(coeffs: tuple[float, ...], x: Tensor) -> Tensor:
    out = torch.zeros_like(x)
    for cf in reversed(coeffs):
        out = out * x + cf
    return out


def _arccos_kernel(n: int, c: Tensor, v1: Tensor, v2: Tensor) -> Tensor:
    """E[relu(u)^n relu(v)^n] = (v1 v2)^{n/2} J_n(theta) / (2 pi)."""
    theta, delta = angle(c, v1, v2)
    if n == 0:
        return (PI - theta) / (2 * PI)
    p, q = _arccos_poly(n)
    sq = torch.sqrt(v1 * v2)
    safe = torch.where(sq > 0, sq, torch.ones_like(sq))
    cos = c / safe
    sin = delta / safe
    j = _polyval(p, cos) * sin + _polyval(q, cos) * (PI - theta)
    return sq ** n * j / (2 * PI)


@functools.lru_cache(maxsize=None)  # one dual object per parameters (stable for torch.compile)
def rectified_monomial_dual(degree: int) -> Callable:
    """phi(x) = 1{x >= 0} x^n; T_dot = n^2 E[relu^{n-1} relu^{n-1}] (0 for n = 0, as neural-tangents)."""
    def dual(c: Tensor, v1: Tensor, v2: Tensor, want_dot: bool):
        t = _arccos_kernel(degree, c, v1, v2)
        t_dot: Optional[Tensor] = None
        if want_dot:
            t_dot = (torch.zeros_like(t) if degree == 0
                     else degree ** 2 * _arccos_kernel(degree - 1, c, v1, v2))
        return t, t_dot
    return dual


__all__ = ["abrelu_dual", "sign_dual", "rectified_monomial_dual"]
