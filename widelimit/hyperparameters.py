r"""Kernel hyperparameters by maximising the GP marginal likelihood.

The analytic NNGP kernel is differentiable in torch with respect to the layers' ``W_std``
and ``b_std``, so the type-II maximum likelihood estimate (Rasmussen & Williams, 2006,
Sec. 5.4) of an infinitely wide network's hyperparameters is a plain gradient descent:

.. math::
    -\log p(Y \mid X, \theta) = \tfrac12 \mathrm{tr}(Y^\top K_\theta^{-1} Y)
    + \tfrac{K}{2} \log\det K_\theta + \tfrac{NK}{2}\log 2\pi, \qquad
    K_\theta = \mathrm{NNGP}_\theta(X, X) + \sigma^2 I,

for N inputs and K independent output columns.  Parameters are optimised on a log scale
(they stay positive) with Adam.  Each named parameter is tied across all layers that have it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from widelimit._tensors import as_input, check_positive
from widelimit.predict._common import as_targets

__all__ = ["fit_hyperparameters", "HyperparameterFit", "negative_log_marginal_likelihood"]

LAYER_PARAMS = ("W_std", "b_std")


@dataclass
class HyperparameterFit:
    """Result of :func:`fit_hyperparameters`.

    Attributes:
        values: fitted values, e.g. ``{"W_std": 1.31, "b_std": 0.38, "noise": 1e-4}``.
        loss_history: negative log marginal likelihood per output value, one per step
            (the last entry is at the fitted values).
        net: a copy of the architecture with the fitted values (plain floats).
        converged: whether the loss changed by less than ``tol`` over the last 10 steps.
    """
    values: dict
    loss_history: list = field(default_factory=list)
    net: Any = None
    converged: bool = False


def negative_log_marginal_likelihood(k: Tensor, y: Tensor, noise: Any) -> Tensor:
    """``-log N(Y; 0, K + noise I)`` per output value, for (N, K) targets (differentiable)."""
    n = k.shape[0]
    a = k + noise * torch.eye(n, dtype=k.dtype, device=k.device)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise FloatingPointError("The kernel plus noise is not positive definite; increase the "
                                 "initial `noise`.")
    alpha = torch.cholesky_solve(y, chol)
    nll = 0.5 * (y * alpha).sum() + y.shape[1] * torch.log(torch.diagonal(chol)).sum() \
        + 0.5 * y.numel() * math.log(2 * math.pi)
    return nll / y.numel()


def _initial(net, name: str) -> Optional[float]:
    for layer in net.walk():
        v = getattr(layer, name, None)
        if v is not None:
            return float(v.detach()) if isinstance(v, Tensor) else float(v)
    return None


def _with_values(net, values: dict):
    def change(layer):
        updates = {p: v for p, v in values.items()
                   if p in LAYER_PARAMS and getattr(layer, p, None) is not None}
        return layer.copy(**updates) if updates else layer
    return net.map(change)


def fit_hyperparameters(net, x: Any, y: Any, params: Sequence[str] = ("W_std", "b_std"),
                        steps: int = 300, lr: float = 0.05, noise: float = 1e-4,
                        tol: float = 1e-7, progress: bool = False) -> HyperparameterFit:
    r"""Fit ``W_std``, ``b_std`` (tied over layers) and optionally ``noise`` by maximum likelihood.

    Args:
        net: a widelimit architecture; its current values are the starting point.
        x: (N, ...) inputs; y: (N,) or (N, K) targets (columns independent, same kernel).
        params: any of ``"W_std"``, ``"b_std"``, ``"noise"`` (the observation noise
            variance; otherwise fixed to ``noise``).
        steps: Adam steps (stops early when the loss changes by < ``tol`` over 10 steps).
        lr: Adam learning rate on the log-parameters.
        noise: observation noise variance (initial value if ``"noise"`` in params).
        progress: show a tqdm progress bar.

    Returns:
        :class:`HyperparameterFit` with the values, the loss history and the fitted net.
    """
    xt, _ = as_input(x, "x")
    xt = xt.to(torch.float64)
    yt, _, _ = as_targets(y, xt.shape[0], "y")
    yt = yt.to(torch.float64)
    names = (params,) if isinstance(params, str) else tuple(params)
    allowed = LAYER_PARAMS + ("noise",)
    if not names or any(p not in allowed for p in names) or len(set(names)) != len(names):
        raise ValueError(f"`params` must be distinct names among {allowed}, got {params!r}.")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
    check_positive(lr, "lr")
    check_positive(noise, "noise")
    init = {}
    for p in names:
        v = float(noise) if p == "noise" else _initial(net, p)
        if v is None or v <= 0:
            raise ValueError(f"`params` names '{p}', but no layer of `net` has a positive {p} to "
                             f"start from.")
        init[p] = v
    logs = {p: torch.tensor(math.log(v), dtype=torch.float64, requires_grad=True)
            for p, v in init.items()}
    opt = torch.optim.Adam(list(logs.values()), lr=lr)

    def loss_at() -> Tensor:
        vals = {p: t.exp() for p, t in logs.items()}
        k = _with_values(net, {p: v for p, v in vals.items() if p != "noise"}).kernel_fn(
            xt, None, get="nngp")
        return negative_log_marginal_likelihood(k, yt, vals.get("noise", float(noise)))

    iterator = range(steps)
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(iterator, desc="fit_hyperparameters", leave=False)
    history: list[float] = []
    converged = False
    for _ in iterator:
        opt.zero_grad()
        loss = loss_at()
        loss.backward()
        history.append(float(loss.detach()))
        if len(history) > 10 and abs(history[-11] - history[-1]) < tol:
            converged = True
            break
        opt.step()
    with torch.no_grad():
        history.append(float(loss_at()))
    values = {p: float(t.detach().exp()) for p, t in logs.items()}
    fitted = _with_values(net, {p: v for p, v in values.items() if p != "noise"})
    return HyperparameterFit(values=values, loss_history=history, net=fitted, converged=converged)

