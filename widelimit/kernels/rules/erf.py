"""Sigmoidal family: Erf (and Sigmoid_like) and Gelu.

Erf (Williams, 1997): for phi(x) = a erf(b x) + c0,
    T     = a^2 (2/pi) arcsin(2 b^2 c / sqrt((1 + 2 b^2 v1)(1 + 2 b^2 v2))) + c0^2
    T_dot = a^2 b^2 (4/pi) / sqrt((1 + 2 b^2 v1)(1 + 2 b^2 v2) - 4 b^4 c^2)
(arcsin written as atan2 for accuracy near |correlation| = 1).

Gelu(x) = x Phi(x): closed form of Tsuchida, Pearce, van der Heide, Roosta &
Gallagher, "Avoiding Kernel Fixed Points: Computing with ELU and GELU Infinite
Networks" (AAAI 2021), with Delta^2 = (1 + v1)(1 + v2) - c^2:
    T     = c/4 + [ (c^2 + v1 v2 Delta^2) / ((1+v1)(1+v2) Delta) + c atan2(c, Delta) ] / (2 pi)
    T_dot = 1/4 + atan2(c, Delta)/(2 pi)
            + c/(2 pi Delta) (1/Delta^2 + (1 - v1 v2)/((1+v1)(1+v2)) + 1)
"""
from __future__ import annotations

import functools

from typing import Callable

import torch
from torch import Tensor

from widelimit.kernels.rules._math import PI, safe_sqrt


@functools.lru_cache(maxsize=None)  # one dual object per parameters (stable for torch.compile)
def erf_dual(a: float, b: float, c0: float) -> Callable:
    b2 = b * b

    def dual(c: Tensor, v1: Tensor, v2: Tensor, want_dot: bool):
        cb = b2 * c
        root = safe_sqrt((1 + 2 * b2 * v1) * (1 + 2 * b2 * v2) - 4 * cb * cb)
        t = (a * a * 2 / PI) * torch.atan2(2 * cb, root) + c0 * c0
        t_dot = (a * a * b2 * 4 / PI) / root if want_dot else None
        return t, t_dot
    return dual


def gelu_dual(c: Tensor, v1: Tensor, v2: Tensor, want_dot: bool):
    prod = v1 * v2
    prod_p1 = (v1 + 1) * (v2 + 1)
    delta2 = prod_p1 - c * c
    delta = safe_sqrt(delta2)
    ang = torch.atan2(c, delta)
    t = ((c * c + prod * delta2) / (prod_p1 * delta) + c * ang) / (2 * PI) + 0.25 * c
    t_dot = None
    if want_dot:
        t_dot = (c / (2 * PI * delta)) * (1 / delta2 + (1 - prod) / prod_p1 + 1) + 0.25 + ang / (2 * PI)
    return t, t_dot


__all__ = ["erf_dual", "gelu_dual"]
