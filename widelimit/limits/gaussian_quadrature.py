"""Gaussian expectations of products of elementwise functions, for kinked functions too.

For a centred Gaussian vector ``u ~ N(0, K)`` in k <= 4 dimensions write ``u = C xi`` with
C the lower Cholesky factor of K and xi standard normal.  Then ``u_j = s_j + C_jj xi_j``
with ``s_j = sum_{i<j} C_ji xi_i`` fixed by the outer variables, and

    E[F(u)] = int phi(xi_1) ... int phi(xi_k) F(C xi) dxi_k ... dxi_1.

For F = prod_i f(u_i) with f kinked (ReLU, |x|) or jumping (step, sign) at 0 only, the
integrand in the innermost variable xi_j is non-smooth at exactly one point,
``xi_j* = -s_j / C_jj`` (where u_j = 0); every integral over the later variables is smooth
in xi_j because it averages their kinks over a Gaussian.  So each level is split at its
own xi_j* and integrated by Gauss-Legendre on [-R, xi_j*] and [xi_j*, R] (R = 9, the
Gaussian tail beyond it is 2e-19): exponential convergence in the number of nodes for
these and for smooth functions, where Cartesian Gauss-Hermite converges only
algebraically at the kinks (``gauss_hermite_moment`` is the independent check).  The
nodes are ``(2 m)^k`` points with positive weights.

:func:`gaussian_pair_moments` gives ``E[f(u_a) f(u_b) f(u_c) f(u_d)]`` for every pair of
pairs of inputs; with N > 4 inputs every quadruple's 4-D Gaussian is integrated
separately (C(N, 4) sets), so N is capped.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["gaussian_nodes", "gaussian_expectation", "gaussian_pair_moments",
           "gauss_hermite_moment", "pairs_of"]

R_MAX = 9.0
MAX_INPUTS = 8


@functools.lru_cache(maxsize=None)
def _legendre(m: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(m)
    return (x + 1) / 2, w / 2                          # on [0, 1]


def _cholesky(k: Tensor, name: str = "K") -> Tensor:
    chol, info = torch.linalg.cholesky_ex(k)
    if int(info) != 0:
        raise ValueError(f"`{name}` must be positive definite (distinct, non-collinear inputs); "
                         f"its Cholesky factorisation failed at column {int(info)}.")
    return chol


def gaussian_nodes(k: Tensor, m: int = 24) -> tuple[Tensor, Tensor]:
    """Nodes ``u`` (P, k) and weights (P,) with ``sum_p w_p F(u_p) ~ E[F(u)]``, u ~ N(0, k).

    Nested Gauss-Legendre, each level split where its coordinate of u is 0 (module
    docstring); ``m`` nodes per piece, ``P = (2 m)^k``.  Differentiable in ``k``.
    """
    if k.ndim != 2 or k.shape[0] != k.shape[1] or not 1 <= k.shape[0] <= 4:
        raise ValueError(f"`k` must be a (k, k) covariance with 1 <= k <= 4, got {tuple(k.shape)}.")
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise ValueError(f"`m` must be a positive integer, got {m!r}.")
    chol = _cholesky(k, "k")
    x01, w01 = (torch.as_tensor(a, dtype=k.dtype, device=k.device) for a in _legendre(m))
    xi = torch.zeros(1, 0, dtype=k.dtype, device=k.device)
    w = torch.ones(1, dtype=k.dtype, device=k.device)
    for j in range(k.shape[0]):
        s = xi @ chol[j, :j]                                       # (P,)
        cut = (-s / chol[j, j]).clamp(-R_MAX, R_MAX)
        lo = torch.stack([torch.full_like(cut, -R_MAX), cut], -1)  # (P, 2) pieces
        hi = torch.stack([cut, torch.full_like(cut, R_MAX)], -1)
        t = lo.unsqueeze(-1) + (hi - lo).unsqueeze(-1) * x01       # (P, 2, m)
        wt = (hi - lo).unsqueeze(-1) * w01 * torch.exp(-t * t / 2) / math.sqrt(2 * math.pi)
        xi = torch.cat([xi.unsqueeze(1).expand(-1, 2 * m, -1),
                        t.reshape(-1, 2 * m, 1)], -1).reshape(-1, j + 1)
        w = (w.unsqueeze(1) * wt.reshape(-1, 2 * m)).reshape(-1)
    return xi @ chol.T, w


def gaussian_expectation(fn: Callable[[Tensor], Tensor], k: Tensor, m: int = 24) -> Tensor:
    """``E[prod_i fn(u_i)]`` for u ~ N(0, k), k <= 4 (:func:`gaussian_nodes`)."""
    u, w = gaussian_nodes(k, m)
    return (w * fn(u).prod(-1)).sum()


def pairs_of(n: int) -> list[tuple[int, int]]:
    """The unordered pairs ``(a, b)``, ``a <= b`` of ``n`` inputs, row by row: the order of the
    pair axis of every ``(P, P)`` object in :mod:`widelimit.limits.finite_width`."""
    return [(a, b) for a in range(n) for b in range(a, n)]


def gaussian_pair_moments(fn: Callable[[Tensor], Tensor], k: Tensor, m: int = 24) -> Tensor:
    """``M[p, q] = E[fn(u_a) fn(u_b) fn(u_c) fn(u_d)]`` for pairs p = (a, b), q = (c, d) of
    :func:`pairs_of` (N), u ~ N(0, k), (N, N) ``k`` with N <= 8: one nested quadrature per
    set of 4 inputs (the whole set when N <= 4); each entry is computed from the set of its
    lowest indices that contains it."""
    n = k.shape[0]
    if k.ndim != 2 or k.shape[1] != n or not 1 <= n <= MAX_INPUTS:
        raise ValueError(f"`k` must be an (N, N) matrix with 1 <= N <= {MAX_INPUTS} "
                         f"(the four-point object has C(N, 4) quadratures), got {tuple(k.shape)}.")
    pairs = pairs_of(n)
    index = {p: i for i, p in enumerate(pairs)}
    out = torch.full((len(pairs), len(pairs)), float("nan"), dtype=k.dtype, device=k.device)
    for subset in itertools.combinations(range(n), min(n, 4)):
        sub = list(subset)
        u, w = gaussian_nodes(k[sub][:, sub], m)
        f = fn(u)                                                  # (P, s)
        local = pairs_of(len(sub))
        prods = torch.stack([f[:, a] * f[:, b] for a, b in local], -1)    # (P, pairs)
        moments = (prods * w.unsqueeze(-1)).T @ prods
        rows = [index[(sub[a], sub[b])] for a, b in local]
        fill = torch.isnan(out[rows][:, rows])
        block = torch.where(fill, moments, out[rows][:, rows])
        out[torch.tensor(rows).unsqueeze(1), torch.tensor(rows).unsqueeze(0)] = block
    return out


def gauss_hermite_moment(fn: Callable[[Tensor], Tensor], k: Tensor, m: int = 40) -> Tensor:
    """``E[prod_i fn(u_i)]`` by a Cartesian (probabilists') Gauss-Hermite grid of ``m^k``
    nodes on the Cholesky coordinates: the textbook rule, an independent check of
    :func:`gaussian_expectation` (slow to converge for kinked ``fn``)."""
    x, w = np.polynomial.hermite_e.hermegauss(m)
    x_t = torch.as_tensor(x, dtype=k.dtype)
    w_t = torch.as_tensor(w / math.sqrt(2 * math.pi), dtype=k.dtype)
    dim = k.shape[0]
    grids = torch.meshgrid(*([x_t] * dim), indexing="ij")
    xi = torch.stack([g.reshape(-1) for g in grids], -1)
    wts = torch.ones(1, dtype=k.dtype)
    for _ in range(dim):
        wts = (wts.unsqueeze(-1) * w_t).reshape(-1)
    u = xi @ _cholesky(k).T
    return (wts * fn(u).prod(-1)).sum()
