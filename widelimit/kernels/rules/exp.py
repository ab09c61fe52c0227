"""Exponential family: Exp, Gaussian and ExpNormalized.

Exp (phi = a exp(b x)):   T = a^2 exp(b^2 (c + (v1 + v2)/2)),  T_dot = b^2 T.
Gaussian (phi = a exp(b x^2)), with d_i = 1 - 2 b v_i and D = sqrt(d1 d2 - 4 b^2 c^2):
    T = a^2 / D,  T_dot = 4 a^2 b^2 c / D^3.
ExpNormalized (Shankar et al., "Neural Kernels Without Tangents", 2020, p. 6):
    T = sqrt(v1 v2) exp(gamma (c / sqrt(v1 v2) + shift)),  T_dot = gamma exp(...).
    It is a kernel map only: there is no finite-width nonlinearity behind it.
"""
from __future__ import annotations

import functools

from typing import Callable

import torch
from torch import Tensor

from widelimit.kernels.rules._math import safe_sqrt


@functools.lru_cache(maxsize=None)  # one dual object per parameters (stable for torch.compile)
def exp_dual(a: float, b: float) -> Callable:
    b2 = b * b

    def dual(c: Tensor, v1: Tensor, v2: Tensor, want_dot: bool):
        t = (a * a) * torch.exp(b2 * (c + (v1 + v2) / 2))
        return t, (b2 * t if want_dot else None)
    return dual


@functools.lru_cache(maxsize=None)  # one dual object per parameters (stable for torch.compile)
def gaussian_dual(a: float, b: float) -> Callable:
    def dual(c: Tensor, v1: Tensor, v2: Tensor, want_dot: bool):
        det = safe_sqrt((1 - 2 * b * v1) * (1 - 2 * b * v2) - 4 * b * b * c * c)
        t = (a * a) / det
        t_dot = (4 * a * a * b * b) * c / det ** 3 if want_dot else None
        return t, t_dot
    return dual


@functools.lru_cache(maxsize=None)  # one dual object per parameters (stable for torch.compile)
def exp_normalized_dual(gamma: float, shift: float, do_clip: bool) -> Callable:
    def dual(c: Tensor, v1: Tensor, v2: Tensor, want_dot: bool):
        sq = torch.sqrt(torch.clamp(v1 * v2, min=1e-30))
        rho = c / sq
        if do_clip:
            rho = torch.clamp(rho, -1, 1)
        e = torch.exp(gamma * (rho + shift))
        return sq * e, (gamma * e if want_dot else None)
    return dual


__all__ = ["exp_dual", "gaussian_dual", "exp_normalized_dual"]
