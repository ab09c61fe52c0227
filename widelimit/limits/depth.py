"""Depth limits of residual networks whose branches are scaled by 1/sqrt(depth).

The architecture (:func:`scaled_resnet`, NTK parametrization, no biases)::

    h^0 = sigma_in W^0 x / sqrt(d)
    h^l = h^(l-1) + (alpha / sqrt(L)) W^l relu(h^(l-1)) / sqrt(n),   l = 1..L
    f   = sigma_out W^out h^L / sqrt(n)

The branch scale ``alpha / sqrt(L)`` is an ordinary ``Dense(width, W_std=alpha / sqrt(L))``
after the branch nonlinearity, so the existing ``FanOut`` / ``FanInSum`` rules apply: the
branch and the skip are independent at infinite width, their kernels add, and per block

    K^l  = K^(l-1) + (alpha^2 / L) F(K^(l-1))
    Th^l = Th^(l-1) + (alpha^2 / L) [F(K^(l-1)) + F'(K^(l-1)) Th^(l-1)]

with the arc-cosine maps F(K) = E[relu(u) relu(v)], F'(K) = E[1{u>0} 1{v>0}] (Cho & Saul
2009) under (u, v) ~ N(0, K). This is the explicit Euler scheme, step 1/L, of the ODE in
layer time t = l / L (Hayou et al. 2021 "Regularization in ResNet with Stochastic Depth";
Bordelon et al. 2023 "Depthwise Hyperparameter Transfer in Residual Networks"; Hayou &
Yang 2023 "Width and Depth Limits Commute in Residual Networks"):

    dK/dt  = alpha^2 F(K),                     K(0)  = sigma_in^2 x x^T / d
    dTh/dt = alpha^2 [F(K) + F'(K) Th],        Th(0) = K(0)

so the finite-depth kernels stay finite and converge to the ODE solution with error O(1/L)
(Euler's global error). On the diagonal F(K)_ii = K_ii / 2 gives the closed forms

    K_ii(1)  = K_ii(0) exp(alpha^2 / 2)                      (depth L: (1 + alpha^2/(2L))^L)
    Th_ii(1) = K_ii(0) exp(alpha^2 / 2) (1 + alpha^2 / 2).

:func:`depth_limit_kernel` integrates the ODE (scipy ``solve_ivp``, DOP853, float64) and
applies the readout: NNGP = sigma_out^2 K(1), NTK = sigma_out^2 (K(1) + Th(1)).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from widelimit.kernels.rules.relu import abrelu_dual
from widelimit.layers import Dense, FanInSum, FanOut, Identity, Layer, Relu, parallel, serial

__all__ = ["scaled_resnet", "residual_block", "depth_limit_kernel"]


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"`{name}` must be a finite positive number, got {value!r}.")
    return float(value)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return value


def residual_block(branch: Layer, scale: float = 1.0) -> Layer:
    """``x -> x + scale * branch(x)`` from ``FanOut(2)``, ``parallel`` and ``FanInSum``.

    ``scale != 1`` requires the branch to end in a :class:`~widelimit.layers.Dense`
    (NTK parametrization, no bias) whose ``W_std`` is multiplied by ``scale``: in the NTK
    parametrization a weight standard deviation is an exact output multiplier, for the
    forward pass and for the NTK, so no new layer or rule is needed. Use it with ``scale = alpha /
    sqrt(depth)`` for the depth-scaled residual networks of :func:`scaled_resnet`.
    """
    if not isinstance(branch, Layer):
        raise TypeError(f"`branch` must be a widelimit layer, got {type(branch).__name__}.")
    scale = _positive("scale", scale)
    if scale != 1.0:
        last = branch.layers[-1] if hasattr(branch, "layers") else branch
        if not isinstance(last, Dense) or last.parameterization != "ntk" or last.b_std is not None:
            raise ValueError("`scale` != 1 needs a branch ending in Dense(parameterization='ntk', "
                             "b_std=None) (its W_std is scaled).")
        scaled = Dense(last.out_dim, W_std=last.W_std * scale, b_std=None,
                       channel_axis=last.channel_axis)
        branch = serial(*branch.layers[:-1], scaled) if hasattr(branch, "layers") else scaled
    return serial(FanOut(2), parallel(Identity(), branch), FanInSum())


def scaled_resnet(depth: int, width: int = 512, *, alpha: float = 1.0, input_std: float = 1.0,
                  out_std: float = 1.0, out_dim: int = 1) -> Layer:
    """ReLU residual MLP with ``depth`` blocks ``h + (alpha / sqrt(depth)) W relu(h)``.

    ``Dense(width, input_std)``, then ``depth`` :func:`residual_block` s with branch
    ``serial(Relu(), Dense(width, W_std=1))`` scaled by ``alpha / sqrt(depth)``, then
    ``Dense(out_dim, out_std)`` (NTK parametrization, no biases). Its analytic kernels
    converge as depth grows to :func:`depth_limit_kernel` (module docstring for the ODE).
    """
    depth, width = _positive_int("depth", depth), _positive_int("width", width)
    alpha = _positive("alpha", alpha)
    block = residual_block(serial(Relu(), Dense(width, W_std=1.0)), alpha / math.sqrt(depth))
    return serial(Dense(width, W_std=_positive("input_std", input_std)), *([block] * depth),
                  Dense(_positive_int("out_dim", out_dim), W_std=_positive("out_std", out_std)))


def _relu_maps(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """F(K), F'(K) of the arc-cosine kernel, the library's ReLU dual (one definition)."""
    v = torch.diagonal(k)
    t, t_dot = abrelu_dual(0.0, 1.0)(k, v[:, None], v[None, :], True)
    return t, t_dot


def depth_limit_kernel(x1: Any, x2: Any = None, *, alpha: float = 1.0, input_std: float = 1.0,
                       out_std: float = 1.0, get: Any = ("nngp", "ntk"), rtol: float = 1e-10,
                       atol: float = 1e-12) -> Any:
    """Infinite-depth (and infinite-width) NNGP / NTK of :func:`scaled_resnet`, float64.

    Integrates ``dK/dt = alpha^2 F(K)``, ``dTh/dt = alpha^2 (F(K) + F'(K) Th)`` over
    t in [0, 1] (scipy ``solve_ivp``, DOP853) on the Gram matrix of ``[x1; x2]``, then the
    readout. Returns one array for a single name in ``get`` and a dict otherwise; numpy
    in, numpy out, a tensor otherwise (float64).
    """
    from scipy.integrate import solve_ivp

    names = (get,) if isinstance(get, str) else tuple(get)
    if not names or any(n not in ("nngp", "ntk") for n in names):
        raise ValueError(f"`get` must be 'nngp', 'ntk' or a tuple of them, got {get!r}.")
    alpha = _positive("alpha", alpha)
    s_in, s_out = _positive("input_std", input_std), _positive("out_std", out_std)
    was_numpy = isinstance(x1, np.ndarray)
    a = torch.as_tensor(np.asarray(x1), dtype=torch.float64)
    b = a if x2 is None else torch.as_tensor(np.asarray(x2), dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"`x1`, `x2` must be (N, d) arrays with the same d, got {tuple(a.shape)}"
                         f" and {tuple(b.shape)}.")
    x = a if x2 is None else torch.cat([a, b])
    n = x.shape[0]
    k0 = s_in ** 2 * (x @ x.T) / x.shape[1]

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        k, th = (torch.from_numpy(y[:n * n].reshape(n, n)),
                 torch.from_numpy(y[n * n:].reshape(n, n)))
        f, f_dot = _relu_maps(k)
        return alpha ** 2 * np.concatenate([f.numpy().ravel(), (f + f_dot * th).numpy().ravel()])

    y0 = np.concatenate([k0.numpy().ravel(), k0.numpy().ravel()])
    sol = solve_ivp(rhs, (0.0, 1.0), y0, method="DOP853", rtol=rtol, atol=atol)
    if not sol.success:  # pragma: no cover - smooth right-hand side
        raise RuntimeError(f"depth-limit ODE failed: {sol.message}")
    y = sol.y[:, -1]
    k1, th1 = y[:n * n].reshape(n, n), y[n * n:].reshape(n, n)
    out_np = {"nngp": s_out ** 2 * k1, "ntk": s_out ** 2 * (k1 + th1)}
    rows, cols = slice(0, a.shape[0]), slice(0 if x2 is None else a.shape[0], n)
    res: dict[str, Any] = {}
    for name in names:
        block = np.ascontiguousarray(out_np[name][rows, cols])
        res[name] = block if was_numpy else torch.from_numpy(block)
    return res[names[0]] if len(names) == 1 else res
