"""Dual of an arbitrary elementwise function by two-dimensional Gaussian quadrature.

For a centred Gaussian pair write u = sqrt(v1) r cos(alpha) and
v = sqrt(v2) r cos(alpha - theta), with (r, alpha) polar coordinates of a standard
bivariate normal and theta the angle between the inputs.  Then

    E[f(u) g(v)] = (1/2pi) int_0^inf r e^{-r^2/2} int_{-pi/2}^{3pi/2} f(u) g(v) dalpha dr.

Functions with a kink or jump at 0 (ReLU, |x|, sign, rectified monomials) are
smooth in r on every ray and piecewise smooth in alpha with breaks exactly at
alpha = +-pi/2 and theta +- pi/2.  Splitting the angle there and using
Gauss-Legendre on each piece (and on r in [0, r_max]) converges exponentially
for these and for smooth functions alike -- unlike Cartesian Gauss-Hermite,
which converges slowly at kinks.  The NTK factor E[f'(u) f'(v)] uses f' from
autograd (or a given derivative), so any torch function works (tanh, softplus,
silu, ...).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from widelimit.kernels.rules._math import angle

DEFAULT_RADIAL = 64
DEFAULT_ANGULAR = 24
R_MAX = 12.0
CHUNK = 1 << 15


@functools.lru_cache(maxsize=None)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1) / 2, w / 2          # nodes and weights on [0, 1]


def autograd_derivative(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Elementwise derivative of ``fn`` via autograd, keeping the graph when x needs grad."""
    def d(x: Tensor) -> Tensor:
        with torch.enable_grad():
            if x.requires_grad:
                y = fn(x)
                if not y.requires_grad:      # constant function
                    return torch.zeros_like(x)
                return torch.autograd.grad(y.sum(), x, create_graph=True)[0]
            xg = x.detach().requires_grad_(True)
            y = fn(xg)
            if not y.requires_grad:
                return torch.zeros_like(x)
            return torch.autograd.grad(y.sum(), xg)[0]
    return d


def _expect(f: Callable, c: Tensor, v1: Tensor, v2: Tensor, n_r: int, n_a: int) -> Tensor:
    """E[f(u) f(v)] for flat tensors c, v1, v2 of equal length P."""
    theta, _ = angle(c, v1, v2)
    s1, s2 = torch.sqrt(v1), torch.sqrt(v2)
    dt = dict(dtype=c.dtype, device=c.device)
    xa, wa = (torch.as_tensor(a, **dt) for a in _gauss_legendre(n_a))
    xr, wr = (torch.as_tensor(a, **dt) for a in _gauss_legendre(n_r))
    half = math.pi / 2
    th = theta.unsqueeze(-1)
    # four angular pieces between -pi/2, theta - pi/2, pi/2, theta + pi/2, 3pi/2
    lo = torch.cat([-half + 0 * th, th - half, half + 0 * th, th + half], -1)     # (P, 4)
    hi = torch.cat([th - half, half + 0 * th, th + half, 3 * half + 0 * th], -1)
    length = hi - lo
    alpha = (lo.unsqueeze(-1) + length.unsqueeze(-1) * xa).flatten(-2)          # (P, 4 n_a)
    w_alpha = (length.unsqueeze(-1) * wa).flatten(-2)
    cos1 = s1.unsqueeze(-1) * torch.cos(alpha)
    cos2 = s2.unsqueeze(-1) * torch.cos(alpha - th)
    r = xr * R_MAX
    w_r = wr * R_MAX * r * torch.exp(-r * r / 2) / (2 * math.pi)
    total = torch.zeros_like(c)
    for i in range(n_r):
        vals = f(r[i] * cos1) * f(r[i] * cos2)
        total = total + w_r[i] * (vals * w_alpha).sum(-1)
    return total


def quadrature_dual(fn: Callable[[Tensor], Tensor], deriv: Optional[Callable[[Tensor], Tensor]] = None,
                    n_radial: int = DEFAULT_RADIAL, n_angular: int = DEFAULT_ANGULAR) -> Callable:
    """Dual of ``fn`` (and of its derivative, for the NTK) by polar Gauss-Legendre quadrature."""
    d = deriv if deriv is not None else autograd_derivative(fn)

    def dual(c: Tensor, v1: Tensor, v2: Tensor, want_dot: bool):
        shape = torch.broadcast_shapes(c.shape, v1.shape, v2.shape)
        cf, v1f, v2f = (t.expand(shape).reshape(-1) for t in (c, v1, v2))
        outs_t, outs_d = [], []
        for start in range(0, cf.numel(), CHUNK):
            sl = slice(start, start + CHUNK)
            outs_t.append(_expect(fn, cf[sl], v1f[sl], v2f[sl], n_radial, n_angular))
            if want_dot:
                outs_d.append(_expect(d, cf[sl], v1f[sl], v2f[sl], n_radial, n_angular))
        t = torch.cat(outs_t).reshape(shape)
        t_dot = torch.cat(outs_d).reshape(shape) if want_dot else None
        return t, t_dot
    dual.no_compile = True  # type: ignore[attr-defined]  # Python loops over nodes and chunks: nothing to fuse
    return dual


__all__ = ["quadrature_dual", "autograd_derivative"]
