"""Monte Carlo over real finite MLPs for the 1/width corrections of
:mod:`widelimit.limits.finite_width`.

Each sample is one network with freshly drawn weight matrices (batched matmuls, float64,
NTK parametrization, a private ``torch.Generator``) and returns the conditional covariance
of its readout given the hidden layers,

    G^(L+1) = C_b + C_W phi(z^L) phi(z^L)^T / n  =  E[f f^T | hidden layers],

an unbiased estimate of ``E[f f^T]`` with the readout weights integrated out exactly.

Control variates (``control_variates=True``): the neurons of layer l+1 given layer l are
i.i.d. N(0, G^(l+1)) with ``E[G^(l+2) | G^(l+1)] = C_b + C_W g(G^(l+1))`` (g the
nonlinearity's dual), so every ``D_l = G^(l+1) - C_b - C_W g(G^l)`` has mean exactly 0.  To
first order ``G^(L+1) - K^(L+1) = sum_l A_l D_l`` with ``A_l`` the product of the later layers'
``C_W J`` (J = dg/dK at the infinite-width kernels); ``G^(L+1) - sum_l A_l D_l`` has the same
mean as ``G^(L+1)`` and fluctuations O(1/n) instead of O(1/sqrt(n)), so its standard error,
and the error of ``n (E[f f^T] - K_inf)``, no longer grows with the width.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor

from widelimit._tensors import as_input
from widelimit._validate import check_bool, check_int
from widelimit.layers import Layer
from widelimit.limits.finite_width import mlp_layers, recursion
from widelimit.limits.gaussian_quadrature import pairs_of

__all__ = ["sample_output_gram"]


def _dual_matrix(phi: Any, g: Tensor) -> Tensor:
    """``E[phi(u_a) phi(u_b)]`` for u ~ N(0, g), batched (..., N, N)."""
    v = torch.diagonal(g, dim1=-2, dim2=-1)
    t, _ = phi.dual()(g, v.unsqueeze(-1), v.unsqueeze(-2), False)
    return t


def _pack(mats: Tensor) -> Tensor:
    n = mats.shape[-1]
    a, b = zip(*pairs_of(n))
    return mats[..., list(a), list(b)]


def _unpack(vecs: Tensor, n: int) -> Tensor:
    out = torch.zeros(*vecs.shape[:-1], n, n, dtype=vecs.dtype)
    for i, (a, b) in enumerate(pairs_of(n)):
        out[..., a, b] = out[..., b, a] = vecs[..., i]
    return out


def sample_output_gram(net: Layer, x: Any, n_nets: int, width: Optional[int] = None, *,
                       seed: int = 0, batch: int = 32, control_variates: bool = False) -> Tensor:
    """``(n_nets, N, N)``: per finite network, ``E[f f^T | hidden layers]`` (module docstring).

    Args:
        net: ``serial(Dense, phi, ..., Dense)`` as for
            :func:`~widelimit.limits.finite_width_nngp`.
        x: (N, d) inputs.
        n_nets: number of independent networks.
        width: hidden width n (default: the net's, which must then be equal across layers).
        seed: seed of the private generator (the global RNG is untouched).
        batch: networks drawn at once.
        control_variates: subtract the zero-mean first-order fluctuations (module
            docstring): same mean, a standard error independent of the width.

    The mean over samples estimates ``E[f f^T]``; their standard deviation over
    ``sqrt(n_nets)`` is its standard error.
    """
    dense, phis, widths = mlp_layers(net)
    check_int("n_nets", n_nets, min=1)
    check_int("batch", batch, min=1)
    check_int("seed", seed)
    check_bool("control_variates", control_variates)
    if width is None:
        if len(set(widths)) != 1:
            raise ValueError(f"the hidden widths {widths} differ; pass `width=`.")
        width = widths[0]
    n = check_int("width", width, min=1)
    xt, _ = as_input(x, "x")
    xt = xt.detach().to(torch.float64).cpu()
    n_in, d = xt.shape
    coef: list[Tensor] = []
    if control_variates:
        rec = recursion(net, xt, four_point=False)
        a_mat = torch.eye(n_in * (n_in + 1) // 2, dtype=torch.float64)
        for jac, cw in zip(reversed(rec["J"]), reversed(rec["cw"])):
            coef.insert(0, a_mat)
            a_mat = a_mat @ (cw * jac)
        k_first = rec["K"][0]
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n_nets, batch):
        b = min(batch, n_nets - start)
        cw, cb = dense[0]
        w = torch.randn(b, d, n, generator=gen, dtype=torch.float64)
        z = math.sqrt(cw / d) * xt @ w + math.sqrt(cb) * torch.randn(b, 1, n, generator=gen,
                                                                     dtype=torch.float64)
        grams: list[Tensor] = []
        corr = torch.zeros(b, len(coef[0]) if coef else 0, dtype=torch.float64)
        for i, (phi, (cw, cb)) in enumerate(zip(phis, dense[1:])):
            h = phi.fn(z)
            gram = cb + cw * h @ h.transpose(1, 2) / n                   # G^(i+2)
            if control_variates:
                prev = k_first if i == 0 else grams[-1]
                dev = gram - cb - cw * _dual_matrix(phi, prev)           # D, mean 0
                corr = corr + _pack(dev) @ coef[i].T
            grams.append(gram)
            if i + 1 < len(phis):
                w = torch.randn(b, n, n, generator=gen, dtype=torch.float64)
                z = math.sqrt(cw / n) * h @ w + math.sqrt(cb) * torch.randn(
                    b, 1, n, generator=gen, dtype=torch.float64)
        res = grams[-1]
        if control_variates:
            res = res - _unpack(corr, n_in)
        out.append(res)
    return torch.cat(out)
