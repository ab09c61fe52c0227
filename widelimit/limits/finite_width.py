"""Leading 1/width corrections of the NNGP of a deep MLP (Roberts, Yaida & Hanin 2022, "The
Principles of Deep Learning Theory", ch. 4; Yaida 2020 "Non-Gaussian processes and neural
networks at finite widths"; Antognini 2019 "Finite size corrections for neural network
Gaussian processes").

The network ``serial(Dense, phi, Dense, phi, ..., Dense)`` with L hidden layers of width n,
``z^1 = W^1 x / sqrt(d) * sigma_1 + b_1``, ``z^(l+1) = sigma_(l+1) W^(l+1) phi(z^l) /
sqrt(n) + b_(l+1)``, weights N(0, 1), biases N(0, beta_l^2) (NTK parametrization; the standard
one has the same forward distribution).  Write C_W = sigma^2, C_b = beta^2.  Given layer l,
the neurons of layer l+1 are i.i.d. Gaussian with the random covariance

    G^(l+1) = C_b + C_W (1/n) sum_j phi(z^l_j) phi(z^l_j)^T,

so ``E[f(x_a) f(x_b)] = E[G^(L+1)_ab]`` exactly.  Index the symmetric N x N matrices by their
pairs p = (a <= b) (:func:`~widelimit.limits.gaussian_quadrature.pairs_of`) and let, for
u ~ N(0, K),

    g_p(K) = E[phi(u_a) phi(u_b)],   J = dg/dK (P x P),   H_p = d^2 g_p / dK dK,
    M_pq(K) = E[phi(u_a) phi(u_b) phi(u_c) phi(u_d)].

With ``E[G^l] = K^l + K1^l / n + O(1/n^2)`` and ``Cov(G^l_p, G^l_q) = V^l_pq / n + O(1/n^2)``,
a second-order expansion of ``E[g(G^l)]`` and the law of total covariance give

    K^(l+1)  = C_b + C_W g(K^l)
    K1^(l+1) = C_W [J K1^l + (1/2) sum_qr H_qr V^l_qr]
    V^(l+1)  = C_W^2 [M - g g^T] + C_W^2 J V^l J^T

from ``K^1 = C_b + C_W x x^T / d``, ``K1^1 = 0``, ``V^1 = 0`` (ch. 4 of the book: V is its
four-point vertex, K1 its NLO metric).  One hidden layer is exact at every width: K1 = 0 and
``Cov(G^2) = V^2 / n``.  The output's connected four-point function is
``E[f_a f_b f_c f_d] - (K_ab K_cd + K_ac K_bd + K_ad K_bc) = (V_ab,cd + V_ac,bd + V_ad,bc) / n``.

g and its derivatives come from the nonlinearity's own dual (closed form or polar quadrature)
by autograd, off the diagonal, and from a 1-D quadrature ``E[phi(sqrt(v) xi)^2]`` on it; M
from the split nested Gauss-Legendre rule of :mod:`widelimit.limits.gaussian_quadrature`.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from widelimit._tensors import as_input
from widelimit._validate import check_int
from widelimit.layers import Dense, Layer
from widelimit.layers.combinators import Serial
from widelimit.layers.nonlinear import Nonlinearity
from widelimit.limits.gaussian_quadrature import (MAX_INPUTS, gaussian_nodes,
                                                  gaussian_pair_moments, pairs_of)

__all__ = ["finite_width_nngp", "mlp_layers", "pair_jacobian_hessian", "FINITE_WIDTH_GET"]

FINITE_WIDTH_GET = ("nngp", "correction", "kernel", "four_point", "cumulant4")


def _flatten(net: Layer) -> list:
    if isinstance(net, Serial):
        return [leaf for layer in net.layers for leaf in _flatten(layer)]
    return [net]


def _dense_params(layer: Dense) -> tuple[float, float]:
    if layer.parameterization == "standard" and tuple(layer.s) != (1, 1):
        raise ValueError(f"finite_width_nngp: {layer!r} has s={layer.s}; only s=(1, 1) is "
                         "supported (then both parametrizations have the same forward pass).")
    if layer.channel_axis != 1:
        raise ValueError(f"finite_width_nngp: {layer!r} acts per position; only vector MLPs "
                         "(Dense on (N, d) inputs) are supported.")
    b = 0.0 if layer.b_std is None else float(layer.b_std)
    return float(layer.W_std) ** 2, b ** 2


def mlp_layers(net: Layer) -> tuple[list[tuple[float, float]], list[Nonlinearity], list[int]]:
    """``([(C_W, C_b)] per Dense, [phi] per hidden layer, [hidden widths])`` of
    ``serial(Dense, phi, Dense, ..., phi, Dense)`` (nested ``serial`` allowed); ValueError
    for any other architecture."""
    if not isinstance(net, Layer):
        raise TypeError(f"`net` must be a widelimit layer, serial(Dense, Relu(), ..., Dense), "
                        f"got {type(net).__name__}.")
    leaves = _flatten(net)
    ok = len(leaves) % 2 == 1 and all(
        isinstance(leaf, Dense if i % 2 == 0 else Nonlinearity) for i, leaf in enumerate(leaves))
    if not ok:
        names = ", ".join(type(leaf).__name__ for leaf in leaves)
        raise ValueError("`net` must alternate Dense and elementwise layers, starting and ending "
                         f"with Dense (an MLP), got serial({names}).")
    dense = [_dense_params(leaf) for leaf in leaves[::2]]
    return dense, list(leaves[1::2]), [leaf.out_dim for leaf in leaves[:-1:2]]


def _diag_g(phi: Nonlinearity, v: Tensor, m: int) -> Tensor:
    """``E[phi(sqrt(v) xi)^2]`` per entry of v, xi ~ N(0, 1) (1-D split quadrature)."""
    xi, w = gaussian_nodes(torch.ones(1, 1, dtype=v.dtype), max(m, 32))
    return (w * phi.fn(torch.sqrt(v).unsqueeze(-1) * xi[:, 0]) ** 2).sum(-1)


def pair_jacobian_hessian(phi: Nonlinearity, k: Tensor, m: int = 20
                          ) -> tuple[Tensor, Tensor, Tensor]:
    """``(g, J, H)`` of ``g_p(K) = E[phi(u_a) phi(u_b)]`` over the pairs of :func:`pairs_of`:
    g (P,), J (P, P) with ``J[p, q] = dg_p / dK_q``, H (P, P, P) with
    ``H[p, q, r] = d^2 g_p / dK_q dK_r`` (K_q the entry of pair q, the matrix symmetric).

    Off the diagonal from ``phi.dual()`` by autograd in (K_ab, K_aa, K_bb); on it from
    ``E[phi(sqrt(v) xi)^2]`` by 1-D quadrature; ``k`` must be positive definite."""
    n = k.shape[0]
    pairs = pairs_of(n)
    index = {p: i for i, p in enumerate(pairs)}
    size = len(pairs)
    g = torch.zeros(size, dtype=k.dtype)
    jac = torch.zeros(size, size, dtype=k.dtype)
    hes = torch.zeros(size, size, size, dtype=k.dtype)
    diag = [index[(a, a)] for a in range(n)]
    with torch.enable_grad():
        v = torch.diagonal(k).detach().clone().requires_grad_(True)
        h = _diag_g(phi, v, m)
        (dh,) = torch.autograd.grad(h.sum(), v, create_graph=True)
        (d2h,) = torch.autograd.grad(dh.sum(), v, allow_unused=True)
        d2h = torch.zeros_like(v) if d2h is None else d2h
        for a in range(n):
            g[diag[a]], jac[diag[a], diag[a]] = h[a].detach(), dh[a].detach()
            hes[diag[a], diag[a], diag[a]] = d2h[a].detach()
        off = [(a, b) for a, b in pairs if a < b]
        if off:
            ia, ib = torch.tensor([a for a, _ in off]), torch.tensor([b for _, b in off])
            args = [k[ia, ib].detach().clone(), torch.diagonal(k)[ia].detach().clone(),
                    torch.diagonal(k)[ib].detach().clone()]
            args = [t.requires_grad_(True) for t in args]
            t, _ = phi.dual()(*args, False)
            grads = torch.autograd.grad(t.sum(), args, create_graph=True)
            second = []
            for gr in grads:
                if not gr.requires_grad:
                    second.append([torch.zeros_like(t)] * 3)
                    continue
                s = torch.autograd.grad(gr.sum(), args, retain_graph=True, allow_unused=True)
                second.append([torch.zeros_like(t) if x is None else x for x in s])
            for i, (a, b) in enumerate(off):
                p, cols = index[(a, b)], (index[(a, b)], index[(a, a)], index[(b, b)])
                g[p] = t[i].detach()
                for r, qr in enumerate(cols):
                    jac[p, qr] = grads[r][i].detach()
                    for s_, qs in enumerate(cols):
                        hes[p, qr, qs] = second[r][s_][i].detach()
    return g, jac, hes


def _unpack(vec: Tensor, n: int) -> Tensor:
    out = torch.zeros(n, n, dtype=vec.dtype)
    for i, (a, b) in enumerate(pairs_of(n)):
        out[a, b] = out[b, a] = vec[i]
    return out


def _pack(mat: Tensor) -> Tensor:
    return torch.stack([mat[a, b] for a, b in pairs_of(mat.shape[0])])


def _four_index(v: Tensor, n: int) -> Tensor:
    idx = torch.zeros(n, n, dtype=torch.long)
    for i, (a, b) in enumerate(pairs_of(n)):
        idx[a, b] = idx[b, a] = i
    return v[idx[:, :, None, None], idx[None, None, :, :]]


def recursion(net: Layer, x: Tensor, m: int = 20, *, four_point: bool = True
              ) -> dict[str, list[Tensor]]:
    """Per layer l = 1 .. L+1 (pre-activations; L+1 the output): ``"K"`` (N, N), ``"K1"``
    (N, N) and ``"V"`` (P, P) of the module docstring, plus ``"J"`` (P, P) and ``"cw"`` of each
    hidden layer's map (for Monte Carlo control variates).  ``four_point=False`` skips the
    4-D quadratures (then only K and J are valid)."""
    dense, phis, _ = mlp_layers(net)
    n_in = x.shape[0]
    cw, cb = dense[0]
    k = cb + cw * (x @ x.T) / x.shape[1]
    size = n_in * (n_in + 1) // 2
    k1, vv = torch.zeros(size, dtype=x.dtype), torch.zeros(size, size, dtype=x.dtype)
    out: dict[str, list] = {"K": [k], "K1": [_unpack(k1, n_in)], "V": [vv], "J": [], "cw": []}
    for phi, (cw, cb) in zip(phis, dense[1:]):
        g, jac, hes = pair_jacobian_hessian(phi, k, m)
        moments = gaussian_pair_moments(phi.fn, k, m) if four_point else torch.outer(g, g)
        k1 = cw * (jac @ k1 + 0.5 * torch.einsum("pqr,qr->p", hes, vv))
        vv = cw ** 2 * (moments - torch.outer(g, g) + jac @ vv @ jac.T)
        k = cb + cw * _unpack(g, n_in)
        for name, value in (("K", k), ("K1", _unpack(k1, n_in)), ("V", vv), ("J", jac),
                            ("cw", cw)):
            out[name].append(value)
    return out


def finite_width_nngp(net: Layer, x: Any, width: Optional[int] = None, *,
                      get: Any = ("nngp", "correction"), n_quadrature: int = 20) -> Any:
    """NNGP of a deep MLP to first order in 1/width: ``E[f f^T] = K_inf + K_1 / n + O(1/n^2)``.

    Args:
        net: ``serial(Dense, phi, Dense, ..., phi, Dense)`` with any elementwise ``phi``
            (``Relu``, ``Erf``, ``Elementwise(torch.tanh)`` ...); NTK or standard
            parametrization; the layers' widths are ignored (all hidden widths are n).
        x: (N, d) inputs, 1 <= N <= 8, distinct and not collinear (every layer's kernel
            must be positive definite).
        width: n, needed only for ``"kernel"`` (default: the net's hidden width, if equal).
        get: names from ``"nngp"`` (K_inf, N x N), ``"correction"`` (K_1), ``"kernel"``
            (``K_inf + K_1 / width``), ``"four_point"`` (V, N x N x N x N:
            ``Cov(G_ab, G_cd) = V_abcd / n`` for the output's conditional covariance G) and
            ``"cumulant4"`` (``V_abcd + V_acbd + V_adbc``: the output's fourth cumulant times
            n).  One name gives one array, a tuple a tuple in that order.
        n_quadrature: nodes per piece of the nested Gauss-Legendre rule (module
            docstring); 20 is float64-accurate (1e-12) for ReLU-type kinks, 16 gives 1e-8.

    Returns:
        float64 arrays; NumPy in, NumPy out.  Recursions in the module docstring.
    """
    names = (get,) if isinstance(get, str) else tuple(get)
    if not names or any(name not in FINITE_WIDTH_GET for name in names):
        raise ValueError(f"`get` must be one of {FINITE_WIDTH_GET} or a tuple of them, "
                         f"got {get!r}.")
    check_int("n_quadrature", n_quadrature, min=4)
    xt, was_numpy = as_input(x, "x")
    if xt.ndim != 2 or not 1 <= xt.shape[0] <= MAX_INPUTS:
        raise ValueError(f"`x` must be (N, d) with 1 <= N <= {MAX_INPUTS} inputs (the four-point "
                         f"object needs C(N, 4) 4-D quadratures), got shape {tuple(xt.shape)}.")
    xt = xt.detach().to(torch.float64).cpu()
    _, _, widths = mlp_layers(net)
    if "kernel" in names and width is None:
        if len(set(widths)) != 1:
            raise ValueError(f"the hidden widths {widths} differ; pass `width=`.")
        width = widths[0]
    if width is not None:
        width = check_int("width", width, min=1)
    rec = recursion(net, xt, n_quadrature)
    n_in = xt.shape[0]
    v4 = _four_index(rec["V"][-1], n_in)
    values = {"nngp": rec["K"][-1], "correction": rec["K1"][-1], "four_point": v4,
              "cumulant4": v4 + v4.permute(0, 2, 1, 3) + v4.permute(0, 3, 2, 1)}
    if "kernel" in names:
        values["kernel"] = rec["K"][-1] + rec["K1"][-1] / width
    res = [np.ascontiguousarray(values[name].numpy()) if was_numpy else values[name]
           for name in names]
    return res[0] if len(res) == 1 else tuple(res)
