"""Trigonometric family: Sin / Cos, Rbf (random Fourier features) and Gabor.

Sin (phi = a sin(b x + c0)), with s = v1 + v2:
    T     = a^2/2 [exp(b^2 (c - s/2)) - exp(-b^2 (c + s/2)) cos(2 c0)]
    T_dot = a^2 b^2/2 [exp(b^2 (c - s/2)) + exp(-b^2 (c + s/2)) cos(2 c0)]
Rbf(gamma) is sqrt(2) sin(sqrt(2 gamma) x + pi/4), whose dual is the RBF kernel
    T = exp(-gamma (v1 + v2 - 2 c)),  T_dot = 2 gamma T   (Rahimi & Recht, 2007).
Gabor phi(x) = exp(-x^2) sin(x): closed form as in neural-tangents' Gabor layer.
"""
from __future__ import annotations

import functools

import math
from typing import Callable

import torch
from torch import Tensor


@functools.lru_cache(maxsize=None)  # one dual object per parameters (stable for torch.compile)
def sin_dual(a: float, b: float, c0: float) -> Callable:
    b2 = b * b
    cos2c = math.cos(2 * c0)

    def dual(c: Tensor, v1: Tensor, v2: Tensor, want_dot: bool):
        half_s = (v1 + v2) / 2
        s1 = torch.exp(b2 * (c - half_s))
        s2 = torch.exp(-b2 * (c + half_s)) * cos2c
        t = (a * a / 2) * (s1 - s2)
        t_dot = (a * a * b2 / 2) * (s1 + s2) if want_dot else None
        return t, t_dot
    return dual


@functools.lru_cache(maxsize=None)  # one dual object per parameters (stable for torch.compile)
def rbf_dual(gamma: float) -> Callable:
    def dual(c: Tensor, v1: Tensor, v2: Tensor, want_dot: bool):
        t = torch.exp(gamma * (2 * c - v1 - v2))
        return t, (2 * gamma * t if want_dot else None)
    return dual


def gabor_dual(c: Tensor, v1: Tensor, v2: Tensor, want_dot: bool):
    prod, sum_ = v1 * v2, v1 + v2
    diff = 4 * (prod - c * c)
    denom = 2 * sum_ + diff + 1
    num = sum_ + diff + 2 * c
    exp_left = torch.exp(-num / (2 * denom))
    exp_right = torch.exp(2 * c / denom)
    t = exp_left * (exp_right - 1) / (2 * torch.sqrt(denom))
    t_dot = None
    if want_dot:
        shared = 1 + 2 * sum_ + 4 * (c * c + prod)
        diff_term = 4 * c * (diff + 3 * sum_ + 2)
        t_dot = exp_left * ((shared - diff_term) + exp_right * (shared + diff_term)) / (2 * denom ** 2.5)
    return t, t_dot


__all__ = ["sin_dual", "rbf_dual", "gabor_dual"]
