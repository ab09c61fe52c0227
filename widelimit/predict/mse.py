r"""Closed-form gradient descent on the squared loss (Lee et al., 2019).

A network trained by full-batch gradient flow on ``L = ||f(X) - Y||^2 / (2 N K)`` with
learning rate :math:`\eta` evolves, in the infinite-width (linearised) limit, as

.. math::
    f_t(X) = Y + e^{-\eta t \Theta / (N K)} (f_0(X) - Y), \qquad
    f_t(x) = f_0(x) + \Theta(x, X) \Theta^{-1} (e^{-\eta t \Theta / (N K)} - I) (f_0(X) - Y),

with :math:`\Theta` the NTK ("Wide Neural Networks of Any Depth Evolve as Linear Models
Under Gradient Descent", Lee et al., NeurIPS 2019, eqs. 9-10; Jacot et al., 2018).  Over
random initialisations (the infinite ensemble) the outputs are Gaussian with the mean and
covariance of eqs. 14-16 of that paper.  Semantics follow ``neural_tangents.predict``.
"""
from __future__ import annotations

import math

from functools import lru_cache
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from widelimit._tensors import as_input, check_positive, to_output
from widelimit.predict._common import (Factor, Gaussian, as_kernel, as_targets, as_times,
                                       canonical_get, check_diag_reg, check_kernel_pair,
                                       check_learning_rate, make_result)
from widelimit.predict.gp import gp_inference

__all__ = ["gradient_descent_mse", "gradient_descent_mse_ensemble", "max_learning_rate"]


def check_trace_axes(trace_axes: Any) -> None:
    if tuple(trace_axes) not in ((-1,), (1,)):
        raise NotImplementedError(f"Only `trace_axes=(-1,)` (outputs share the kernel) is supported, "
                                  f"got {trace_axes!r}.")


def _broadcast(x: Any, shape: tuple, like: Tensor, name: str, flat: bool = False) -> Tensor:
    """``x`` (number or array) broadcast to ``shape``; ``flat``: 1-D targets, (M,) -> (M, 1)."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return torch.full(shape, float(x), dtype=like.dtype, device=like.device)
    t, _ = as_input(x, name, min_ndim=0)
    if flat and t.ndim == 1:
        t = t.unsqueeze(-1)
    try:
        return torch.broadcast_to(t.to(device=like.device, dtype=like.dtype), shape)
    except RuntimeError as e:
        raise ValueError(f"`{name}` must broadcast to shape {shape}, got {tuple(t.shape)}.") from e


def _out(x: Tensor, t_shape: Optional[tuple], was_1d: bool) -> Tensor:
    """(T, M, K) -> t_shape + (M, K); drop K for 1-D targets."""
    if t_shape is not None:
        x = x.reshape(t_shape + tuple(x.shape[1:]))
    return x.squeeze(-1) if was_1d else x


def gradient_descent_mse(k_train_train: Any, y_train: Any, learning_rate: float = 1.0,
                         diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False,
                         trace_axes: Sequence[int] = (-1,), solver: Any = None) -> Callable:
    r"""Outputs of a given network trained by gradient flow on MSE, at any time ``t``.

    Args:
        k_train_train: (N, N) NTK (analytic or empirical) on the training inputs.
        y_train: (N, K) or (N,) targets.
        learning_rate: step size :math:`\eta`; time ``t`` counts steps (``eta * t`` is the
            continuous time).
        diag_reg: ridge added to the kernel's diagonal (times its mean diagonal unless
            ``diag_reg_absolute_scale``).
        diag_reg_absolute_scale: take ``diag_reg`` in absolute units.
        trace_axes: only ``(-1,)``: the K outputs share the kernel.
        solver: how the t = inf test prediction solves ``(K + reg I) a = y - f_0``: None
            (cached LAPACK Cholesky, pseudo-inverse if singular), ``"cholesky"`` (blocked),
            ``"cg"`` (conjugate gradient), or a callable ``solver(A, b)``; see
            :func:`widelimit.solvers.matrix_solver`.

    Returns:
        ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)`` returning
        ``fx_train_t``, ``fx_test_t`` or ``(fx_train_t, fx_test_t)`` with leading axes of
        ``t``'s shape (``t=None`` is t = inf and solves by Cholesky instead of eigh).  The
        eigendecomposition / Cholesky factor is computed once and cached.
    """
    check_trace_axes(trace_axes)
    k_dd, was_numpy = as_kernel(k_train_train, "k_train_train", train=True)
    y, _, was_1d = as_targets(y_train, k_dd.shape[0])
    y = y.to(k_dd.dtype)
    lr = check_learning_rate(learning_rate)
    factor = Factor(k_dd, check_diag_reg(diag_reg), bool(diag_reg_absolute_scale), "k_train_train")
    size = y.numel()
    solve = factor.solve
    if solver is not None:
        from widelimit.solvers.dispatch import matrix_solver
        custom = matrix_solver(solver)

        def solve(b: Tensor) -> Tensor:
            return custom(factor.a, b)

    def predict_fn(t: Any = None, fx_train_0: Any = 0.0, fx_test_0: Any = None,
                   k_test_train: Any = None):
        if fx_train_0 is None and fx_test_0 is None:
            raise ValueError("Both `fx_train_0` and `fx_test_0` are None: nothing to predict.")
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("`k_test_train` is required to predict on the test set "
                             "(`fx_test_0` was given).")
        times = as_times(t, k_dd.dtype)
        f0 = None if fx_train_0 is None else _broadcast(fx_train_0, tuple(y.shape), k_dd, "fx_train_0", was_1d)
        k_td = None
        if fx_test_0 is not None:
            k_td, _ = as_kernel(k_test_train, "k_test_train")
            check_kernel_pair(k_td, k_dd.shape[0])
            k_td = k_td.to(k_dd.dtype)
            g0 = _broadcast(fx_test_0, (k_td.shape[0], y.shape[1]), k_dd, "fx_test_0", was_1d)
        if times is None:
            fx_train = y if f0 is not None else None
            fx_test = None
            if k_td is not None:
                rhs = y if f0 is None else y - f0
                fx_test = g0 + k_td @ solve(rhs)
            t_shape = None
        else:
            tt, t_shape = times
            tt = tt.to(k_dd.device) * lr
            _, evecs, _ = factor.eigh()
            rhs = -y if f0 is None else f0 - y
            coef = evecs.T @ rhs                                   # (N, K)
            fx_train = fx_test = None
            if f0 is not None:
                e = factor.phi(tt, size, kind="expm1")             # (T, N)
                fx_train = f0 + evecs @ (e.unsqueeze(-1) * coef)
            if k_td is not None:
                ie = factor.phi(tt, size, kind="inv_expm1")
                fx_test = g0 + (k_td @ evecs) @ (ie.unsqueeze(-1) * coef)
        outs = [None if v is None else _out(v if times is not None else v.unsqueeze(0),
                                             t_shape if times is not None else (), was_1d)
                for v in (fx_train, fx_test)]
        if f0 is not None and k_td is not None:
            return to_output(tuple(outs), was_numpy)
        return to_output(outs[0] if f0 is not None else outs[1], was_numpy)

    return predict_fn


def _kernel_callable(kernel_fn: Any) -> Callable:
    if hasattr(kernel_fn, "kernel_fn"):
        return kernel_fn.kernel_fn
    if not callable(kernel_fn):
        raise TypeError(f"`kernel_fn` must be callable as kernel_fn(x1, x2, get) (or a widelimit "
                        f"layer), got {type(kernel_fn).__name__}.")
    return kernel_fn


def _dependency(names: tuple[str, ...], compute_cov: bool) -> tuple[str, ...]:
    deps = ()
    if "nngp" in names or ("ntk" in names and compute_cov):
        deps += ("nngp",)
    if "ntk" in names:
        deps += ("ntk",)
    return deps


def gradient_descent_mse_ensemble(kernel_fn: Any, x_train: Any, y_train: Any,
                                  learning_rate: float = 1.0, diag_reg: float = 0.0,
                                  diag_reg_absolute_scale: bool = False,
                                  trace_axes: Sequence[int] = (-1,), **kernel_fn_kwargs) -> Callable:
    r"""Mean and covariance of an infinite ensemble of infinite-width networks trained on MSE.

    With ``get="ntk"`` all layers are trained (Lee et al., 2019, eqs. 14-16):

    .. math::
        \mu_t(x) = \Theta_{xX}\Theta^{-1}(I - e^{-\eta t\Theta/(NK)}) Y,\quad
        \Sigma_t = K_{xx} + B K_{XX} B^\top - (\Theta_{xX} \Theta^{-1} (I - e^{-\eta t\Theta/(NK)})
        K_{Xx} + h.c.),\ B = \Theta_{xX}\Theta^{-1}(I - e^{-\eta t\Theta/(NK)});

    with ``get="nngp"`` only the readout is trained (:math:`\Theta \to K`, the NNGP).  At
    ``t=None`` (= inf) this is :func:`gp_inference`.

    Args:
        kernel_fn: ``kernel_fn(x1, x2, get)`` returning a namedtuple with ``nngp``/``ntk``
            (e.g. ``net.kernel_fn``), or a widelimit layer.
        x_train: (N, ...) training inputs; y_train: (N, K) or (N,) targets.
        learning_rate, diag_reg, diag_reg_absolute_scale, trace_axes: as in
            :func:`gradient_descent_mse`.
        **kernel_fn_kwargs: passed to every ``kernel_fn`` call.

    Returns:
        ``predict_fn(t=None, x_test=None, get=None, compute_cov=False)``: for each of ``get``
        (``"nngp"``, ``"ntk"``, a tuple; None = both) the mean ((t-shape +) (M, K)) or a
        :class:`Gaussian` ``(mean, covariance)`` with covariance ((t-shape +) (M, M));
        a namedtuple when ``get`` is a tuple.  ``x_test=None`` predicts on the train set.
    """
    check_trace_axes(trace_axes)
    kf = _kernel_callable(kernel_fn)
    xt, was_numpy = as_input(x_train, "x_train")
    y, _, was_1d = as_targets(y_train, xt.shape[0])
    lr = check_learning_rate(learning_rate)
    reg = check_diag_reg(diag_reg)
    absolute = bool(diag_reg_absolute_scale)
    cache: dict[str, Tensor] = {}

    def k_train(names: tuple[str, ...]) -> dict[str, Tensor]:
        missing = tuple(g for g in names if g not in cache)
        if missing:
            out = _pair(kf(xt, None, get=missing, **kernel_fn_kwargs), missing)
            cache.update({g: getattr(out, g) for g in missing})
        return {g: cache[g] for g in names}

    @lru_cache(2)
    def factor(g: str) -> Factor:
        k = k_train((g,))[g]
        return Factor(k, reg, absolute, f"kernel_fn(x_train, None, '{g}')")

    @lru_cache(4)
    def inf_fn(names: tuple[str, ...]) -> Callable:
        kd = k_train(("nngp", "ntk") if "ntk" in names else ("nngp",))
        return gp_inference(_Pair(**kd), y, reg, absolute)

    def predict_fn(t: Any = None, x_test: Any = None, get: Any = None, compute_cov: bool = False,
                   **kernel_fn_test_kwargs):
        names, single = canonical_get(get, ("nngp", "ntk"))
        kwargs = {**kernel_fn_kwargs, **kernel_fn_test_kwargs}
        deps = _dependency(names, compute_cov)
        kd = k_train(deps)
        dtype = kd[deps[0]].dtype
        times = as_times(t, dtype)
        k_td = nngp_tt = None
        if x_test is not None:
            xs, _ = as_input(x_test, "x_test")
            if xs.shape[1:] != xt.shape[1:]:
                raise ValueError(f"`x_test` must have shape (M, {', '.join(map(str, xt.shape[1:]))}) "
                                 f"like x_train, got {tuple(xs.shape)}.")
            xs = xs.to(xt.dtype)
            k_td = _pair(kf(xs, xt, get=deps, **kwargs), deps)
            if compute_cov:
                nngp_tt = _pair(kf(xs, None, get=("nngp",), **kwargs), ("nngp",)).nngp
        if times is None:
            fn = inf_fn(names)
            tt_arg = (True if x_test is None else nngp_tt) if compute_cov else None
            res = fn(get=names, k_test_train=k_td, k_test_test=tt_arg)
            out = {g: getattr(res, g) for g in names}
            out = {g: (Gaussian(_sq(v.mean, was_1d), v.covariance) if compute_cov else _sq(v, was_1d))
                   for g, v in out.items()}
            return to_output(make_result(out, names, single), was_numpy)
        tt, t_shape = times
        tt = tt.to(kd[deps[0]].device) * lr
        out = {}
        size = y.numel()
        for g in names:
            f = factor(g)
            _, evecs, _ = f.eigh()
            coef = evecs.T @ y.to(dtype)                                  # (N, K)
            ie = f.phi(tt, size, kind="inv_expm1")                         # (T, N)
            a = None
            if k_td is None:
                mean = evecs @ (-f.phi(tt, size, kind="expm1").unsqueeze(-1) * coef)
            else:
                a = getattr(k_td, g) @ evecs                               # (M, N)
                mean = a @ (-ie.unsqueeze(-1) * coef)
            mean = _out(mean, t_shape, was_1d)
            if not compute_cov:
                out[g] = mean
                continue
            cov = _ensemble_cov(g, f, tt, size, kd, k_td, nngp_tt, a, ie)
            out[g] = Gaussian(mean, cov.reshape(t_shape + tuple(cov.shape[1:])))
        return to_output(make_result(out, names, single), was_numpy)

    return predict_fn


class _Pair:
    def __init__(self, nngp: Optional[Tensor] = None, ntk: Optional[Tensor] = None):
        self.nngp, self.ntk = nngp, ntk


def _pair(k: Any, names: tuple[str, ...]) -> _Pair:
    """The ``names`` kernels of a kernel_fn result (namedtuple, Kernel, tensor) as tensors."""
    vals = {}
    for g in names:
        v = k if isinstance(k, (Tensor, np.ndarray)) and len(names) == 1 else getattr(k, g, None)
        if v is None:
            raise ValueError(f"`kernel_fn` did not return the '{g}' kernel.")
        vals[g] = torch.as_tensor(v)
    return _Pair(**vals)


def _sq(x: Tensor, was_1d: bool) -> Tensor:
    return x.squeeze(-1) if was_1d else x


def _ensemble_cov(g: str, f: Factor, tt: Tensor, size: int, kd: dict, k_td: Any,
                  nngp_tt: Optional[Tensor], a: Optional[Tensor], ie: Tensor) -> Tensor:
    """(T, M, M) covariance of the ensemble at times ``tt`` (Lee et al. 2019, eqs. 15-16)."""
    evals, evecs, null = f.eigh()
    lam = torch.where(null, torch.zeros_like(evals), evals).unsqueeze(0)
    if k_td is None:                                                   # training set
        inf = torch.isinf(tt).reshape(-1, 1)
        decay = torch.exp(-lam * torch.where(inf, torch.ones_like(tt.reshape(-1, 1)),
                                             tt.reshape(-1, 1)) / size)
        decay = torch.where(inf & (lam > 0), torch.zeros_like(decay), decay)
        if g == "nngp":
            return torch.einsum("ji,ti,ki->tjk", evecs, lam * decay ** 2, evecs)
        e = torch.einsum("mi,ti,ki->tmk", evecs, decay, evecs)
        return e @ kd["nngp"] @ e.transpose(1, 2)
    kt = nngp_tt.unsqueeze(0)
    if g == "nngp":
        ie2 = f.phi(2 * tt, size, kind="inv_expm1")
        return kt - torch.einsum("mi,ti,li->tml", a, -ie2, a)
    ad = a * (-ie).unsqueeze(1)                                        # (T, M, N) = Theta_xX V D_t
    m = getattr(f, "nngp_in_eigenbasis", None)                         # K_XX in the NTK eigenbasis,
    if m is None:                                                      # cached on the factor
        m = f.nngp_in_eigenbasis = evecs.T @ kd["nngp"] @ evecs
    cross = ad @ (evecs.T @ k_td.nngp.T)                               # (T, M, M)
    return kt + (ad @ m) @ ad.transpose(1, 2) - cross - cross.transpose(1, 2)


def max_learning_rate(ntk_train_train: Any, y_train_size: Optional[int] = None,
                      momentum: float = 0.0, eps: float = 1e-12) -> float:
    r"""Largest stable learning rate of full-batch (momentum) GD on MSE in the linear regime.

    Gradient descent on ``||f - y||^2 / (2 n)`` (``n = y_train_size``) contracts iff
    :math:`\eta < 2 n / \lambda_{max}(\Theta)`; with heavy-ball momentum ``m`` the bound is
    :math:`2 (1 + m) n / \lambda_{max}` (Goh, "Why Momentum Really Works", 2017).  ``n``
    defaults to N (one output).
    """
    k, _ = as_kernel(ntk_train_train, "ntk_train_train", train=True)
    if k.shape[0] != k.shape[1]:
        raise ValueError(f"`ntk_train_train` must be square, got shape {tuple(k.shape)}.")
    check_positive(momentum, "momentum", allow_zero=True)
    factor = k.shape[0] if y_train_size is None else int(y_train_size)
    if factor < 1:
        raise ValueError(f"`y_train_size` must be a positive integer, got {y_train_size!r}.")
    evals = torch.linalg.eigvalsh(k.to(torch.float64))
    lam_min, lam_max = float(evals[0]), float(evals[-1])
    if lam_max <= 0:
        raise ValueError("`ntk_train_train` has no positive eigenvalue (a zero kernel): gradient "
                         "descent does not move the outputs and every learning rate is stable.")
    if lam_min < -math.sqrt(torch.finfo(k.dtype).eps) * lam_max:
        raise ValueError(f"`ntk_train_train` is not positive semi-definite: its smallest "
                         f"eigenvalue is {lam_min:.3g} (largest {lam_max:.3g}).")
    return 2.0 * (1.0 + float(momentum)) * factor / (lam_max + eps)

