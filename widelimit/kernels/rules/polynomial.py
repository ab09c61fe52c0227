"""Polynomial family: Polynomial, Monomial and Hermite.

For phi(x) = sum_k a_k x^k and x = sqrt(v) u, u ~ N(0, 1), expanding u^k in the
orthonormal Hermite basis h_l = He_l / sqrt(l!) gives
    phi(sqrt(v) u) = sum_l v^{l/2} r_l(v) h_l(u),
    r_l(v) = sum_i a_{l+2i} v^i (l+2i)! / (2^i i! sqrt(l!)),
and by Mehler's formula E[phi(x) phi(y)] = sum_l r_l(v1) r_l(v2) c^l,
    T_dot = dT/dc = sum_{l>=1} l r_l(v1) r_l(v2) c^{l-1}   (Price's theorem).
No division by the variances, so zero-variance inputs are safe.

Hermite(n) follows neural-tangents: inputs are assumed to have unit variance,
T = c^n, T_dot = n c^{n-1}.
"""
from __future__ import annotations

import functools

import math
from typing import Callable, Sequence

import torch
from torch import Tensor


def _r_coefficients(coef: Sequence[float]) -> list[list[float]]:
    """r_l as polynomial coefficients in v (lowest first), for l = 0..deg."""
    deg = len(coef) - 1
    out = []
    for l in range(deg + 1):
        out.append([coef[l + 2 * i] * math.factorial(l + 2 * i)
                    / (2 ** i * math.factorial(i) * math.sqrt(math.factorial(l)))
                    for i in range((deg - l) // 2 + 1)])
    return out


def _poly(cs: Sequence[float], v: Tensor) -> Tensor:
    out = torch.zeros_like(v)
    for cf in reversed(cs):
        out = out * v + cf
    return out


@functools.lru_cache(maxsize=None)  # one dual object per parameters (stable for torch.compile)
def polynomial_dual(coef: Sequence[float]) -> Callable:
    rs = _r_coefficients(tuple(float(a) for a in coef))

    def dual(c: Tensor, v1: Tensor, v2: Tensor, want_dot: bool):
        t = torch.zeros_like(c * v1 * v2)
        t_dot = torch.zeros_like(t) if want_dot else None
        c_pow = torch.ones_like(t)       # c^l
        c_pow_prev = torch.zeros_like(t)  # c^{l-1}
        for l, r in enumerate(rs):
            rr = _poly(r, v1) * _poly(r, v2)
            t = t + rr * c_pow
            if want_dot and l >= 1:
                t_dot = t_dot + l * rr * c_pow_prev
            c_pow_prev, c_pow = c_pow, c_pow * c
        return t, t_dot
    return dual


@functools.lru_cache(maxsize=None)  # one dual object per parameters (stable for torch.compile)
def hermite_dual(degree: int) -> Callable:
    def dual(c: Tensor, v1: Tensor, v2: Tensor, want_dot: bool):
        t = c ** degree
        t_dot = None
        if want_dot:
            t_dot = torch.zeros_like(c) if degree == 0 else degree * c ** (degree - 1)
        return t, t_dot
    return dual


__all__ = ["polynomial_dual", "hermite_dual"]
