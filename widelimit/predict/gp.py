r"""Exact posteriors: NNGP, NTK ensemble at t = inf, NTK-GP, and the Student-t process.

* ``"nngp"`` -- Bayesian posterior of an infinitely wide network (Lee et al., 2018):
  :math:`\mu = K_{xX} K^{-1} Y`, :math:`\Sigma = K_{xx} - K_{xX} K^{-1} K_{Xx}`.
* ``"ntk"`` -- infinite ensemble of infinitely wide networks trained to convergence on MSE
  (Lee et al., 2019, eq. 16): :math:`\mu = \Theta_{xX}\Theta^{-1}Y`,
  :math:`\Sigma = K_{xx} + \Theta_{xX}\Theta^{-1}K\Theta^{-1}\Theta_{Xx}
  - (\Theta_{xX}\Theta^{-1}K_{Xx} + h.c.)`.
* ``"ntkgp"`` -- GP posterior with the NTK as prior covariance (He, Lakshminarayanan & Teh,
  "Bayesian Deep Ensembles via the Neural Tangent Kernel", NeurIPS 2020).
* :func:`student_t_inference` -- an inverse-gamma prior on the kernel's scale (the
  last-layer variance) makes the NNGP a Student-t process (Lee et al., "Scale Mixtures of
  Neural Network Gaussian Processes", ICLR 2022).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from widelimit._tensors import check_positive, gram_rows, to_output
from widelimit.predict._common import (GP_GETS, Factor, Gaussian, StudentT, as_kernel, as_targets,
                                       canonical_get, check_diag_reg, check_kernel_pair,
                                       get_attr, make_result)

__all__ = ["gp_inference", "student_t_inference"]


def gp_inference(k_train_train: Any, y_train: Any, diag_reg: float = 0.0,
                 diag_reg_absolute_scale: bool = False, trace_axes: Sequence[int] = (-1,),
                 solver: Any = None) -> Callable:
    r"""Posterior mean (and covariance) of the NNGP, the converged NTK ensemble, or the NTK-GP.

    Args:
        k_train_train: (N, N) kernel, or a :class:`widelimit.Kernel` / namedtuple with
            ``nngp`` and/or ``ntk`` (the NTK covariance needs both).
        y_train: (N, K) or (N,) targets.
        diag_reg: ridge on the diagonal, times the kernel's mean diagonal unless
            ``diag_reg_absolute_scale`` (observation noise variance for the GP views).
        trace_axes: only ``(-1,)``.
        solver: how the posterior mean solves ``(K + reg I) a = y``: None (cached LAPACK
            Cholesky), ``"cholesky"`` (blocked), ``"cg"`` (conjugate gradient) or a callable
            ``solver(A, b)`` (:func:`widelimit.solvers.matrix_solver`); covariances always
            use the Cholesky factor.

    Returns:
        ``predict_fn(get=None, k_test_train=None, k_test_test=None)``: for each of ``get``
        (``"nngp"``, ``"ntk"``, ``"ntkgp"``, a tuple; None = nngp and ntk) the mean (M, K), or
        a :class:`Gaussian` ``(mean, covariance)`` when ``k_test_test`` is given.
        ``k_test_train=None`` gives the train set: ``N(y_train, 0)``.  Cholesky factors are
        cached per kernel.
    """
    from widelimit.predict.mse import check_trace_axes
    check_trace_axes(trace_axes)
    first = k_train_train if not hasattr(k_train_train, "nngp") else (
        k_train_train.nngp if k_train_train.nngp is not None else k_train_train.ntk)
    k0, was_numpy = as_kernel(first, "k_train_train", train=True)
    n = k0.shape[0]
    y, _, was_1d = as_targets(y_train, n)
    y = y.to(k0.dtype)
    reg = check_diag_reg(diag_reg)
    absolute = bool(diag_reg_absolute_scale)
    factors: dict[str, Factor] = {}
    k_inv_y: dict[str, Tensor] = {}

    checked: dict[str, Tensor] = {}

    def kdd(g: str) -> Tensor:
        if g not in checked:     # validated once (a NaN scan of (N, N) is not free)
            k, _ = as_kernel(get_attr(k_train_train, g, "k_train_train"), "k_train_train", train=True)
            if k.shape != (n, n):
                raise ValueError(f"`k_train_train.{g}` must have shape ({n}, {n}), got {tuple(k.shape)}.")
            checked[g] = k.to(k0.dtype)
        return checked[g]

    def factor(g: str) -> Factor:
        if g not in factors:
            factors[g] = Factor(kdd(g), reg, absolute, f"k_train_train ({g})")
        return factors[g]

    custom = None
    if solver is not None:
        from widelimit.solvers.dispatch import matrix_solver
        custom = matrix_solver(solver)

    def solve(g: str, b: Tensor) -> Tensor:
        if custom is not None:
            return custom(factor(g).a, b)
        return factor(g).solve(b)

    def factorize(gs: set) -> None:
        """Factorise the train kernels ``gs`` side by side, one thread each on CPU: LAPACK's
        Cholesky gains little from a second thread, two of them at once nearly 2x."""
        todo = [g for g in sorted(gs) if g not in factors]
        if len(todo) > 1 and y.device.type == "cpu":
            from widelimit.scale.threads import parallel_map
            parallel_map(lambda g: factor(g).factorize(), todo, y.device)

    def ktd(g: str, k_test_train: Any) -> Tensor:
        k, _ = as_kernel(get_attr(k_test_train, g, "k_test_train"), "k_test_train")
        check_kernel_pair(k, n)
        return k.to(k0.dtype)

    def ktt(g: str, k_test_test: Any, m: int) -> Tensor:
        k, _ = as_kernel(get_attr(k_test_test, g, "k_test_test"), "k_test_test")
        if k.shape != (m, m):
            raise ValueError(f"`k_test_test` must have shape ({m}, {m}) to match k_test_train, "
                             f"got {tuple(k.shape)}.")
        return k.to(k0.dtype)

    def predict_fn(get: Any = None, k_test_train: Any = None, k_test_test: Any = None):
        names, single = canonical_get(get, GP_GETS)
        if k_test_train is not None and custom is None:
            factorize({"ntk" if g == "ntkgp" else g for g in names})
        out: dict = {}
        whitened: dict = {}
        for g in names:
            k = "ntk" if g == "ntkgp" else g
            if k_test_train is None:
                mean = y
                cov = None if k_test_test is None else torch.zeros(n, n, dtype=k0.dtype,
                                                                   device=k0.device)
            else:
                k_td = ktd(k, k_test_train)
                if k not in k_inv_y:
                    k_inv_y[k] = solve(k, y)
                mean = k_td @ k_inv_y[k]
                cov = None
                if k_test_test is not None:
                    cov = _posterior_cov(g, k_td, k_test_train, k_test_test, factor, kdd, ktd,
                                         ktt, whitened)
            mean = mean.squeeze(-1) if was_1d else mean
            out[g] = mean if cov is None else Gaussian(mean, cov)
        return to_output(make_result(out, names, single), was_numpy)

    return predict_fn


def _posterior_cov(g, k_td, k_test_train, k_test_test, factor, kdd, ktd, ktt, whitened):
    """The posterior covariance of ``g`` (module docstring), exactly symmetric.

    NNGP / NTK-GP: ``K_tt - X X^T`` with ``X = K_td L^{-T}`` (``K + rI = L L^T``).  NTK
    ensemble, with ``T = Theta^{-1} Theta_dt``:

        Sigma = K_tt + T^T K T - (T^T K_dt + h.c.)
              = K_tt - X X^T + (U - X^T)^T (U - X^T) - r T^T T,   U = L^T T,

    (as ``K = L L^T - r I`` and ``T^T K_dt = U^T X^T``): the NNGP posterior plus a Gram
    matrix, from the NNGP's whitened ``X`` and posterior (``whitened``, shared within one
    prediction): one ``trmm`` and two ``syrk``, 2 N^2 M + N M^2 flops instead of
    4 N^2 M + 2 N M^2; without the NNGP's Cholesky factor, ``T^T (K T - 2 K_dt)``
    symmetrised."""
    m = k_td.shape[0]
    if g in ("nngp", "ntkgp"):
        g_init = "nngp" if g == "nngp" else "ntk"
        x = factor(g_init).whiten_rows(k_td)                           # K_td L^-T
        if x is None:
            cov = ktt(g_init, k_test_test, m) - k_td @ factor(g_init).solve(k_td.T)
            return 0.5 * (cov + cov.T)
        cov = ktt(g_init, k_test_test, m) - gram_rows(x)
        if g == "nngp":
            whitened["nngp"] = (x, cov)
        return cov
    term1 = factor("ntk").solve(k_td.T)                                # (N, M) = Θ^-1 Θ_dt
    if "nngp" in whitened:              # only there when the NNGP has a Cholesky factor
        x, nngp_cov = whitened["nngp"]
        f = factor("nngp")
        d = f.chol_t_times(term1).sub_(x.T)
        return gram_rows(d.T).sub_(gram_rows(term1.T), alpha=f.reg).add_(nngp_cov)
    nngp_td = ktd("nngp", k_test_train)
    # term1^T K term1 - term1^T K_dt - K_td term1 + K_tt; the two middle terms are each
    # other's transpose, so under the symmetrisation below they are 2 term1^T K_dt:
    # one (M, N) x (N, M) product for both
    cov = term1.T @ (kdd("nngp") @ term1).sub_(nngp_td.T, alpha=2.0)
    cov = cov.add_(ktt("nngp", k_test_test, m))
    return 0.5 * (cov + cov.T)


def student_t_inference(k_train_train: Any, y_train: Any, alpha: float = 2.0, beta: float = 2.0,
                        diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False) -> Callable:
    r"""Posterior predictive of a scale mixture of NNGPs (a Student-t process).

    Model (Lee et al., ICLR 2022, "Scale Mixtures of Neural Network Gaussian Processes",
    Sec. 3): the last-layer variance is a random scale :math:`s \sim
    \mathrm{InvGamma}(\alpha, \beta)` multiplying the kernel, and given :math:`s` the K
    output columns are independent :math:`\mathcal{GP}(0, s\,(K + r I))` observations of
    ``y_train`` (``r`` = the ``diag_reg`` noise, scaled with ``s`` too).  Marginalising
    :math:`s` gives, with N training points and :math:`q = \mathrm{tr}(Y^\top (K+rI)^{-1} Y)`,

    .. math::
        f(x) \mid Y \sim t_{2\alpha + NK}\Big(K_{xX}(K + rI)^{-1} Y,\;
        \frac{2\beta + q}{2\alpha + NK} \big(K_{xx} - K_{xX}(K + rI)^{-1}K_{Xx}\big)\Big).

    Args:
        k_train_train: (N, N) NNGP kernel (or a Kernel / namedtuple with ``nngp``).
        y_train: (N, K) or (N,) targets.
        alpha, beta: shape and scale of the inverse-gamma prior (> 0).
        diag_reg, diag_reg_absolute_scale: as in :func:`gp_inference`.

    Returns:
        ``predict_fn(k_test_train=None, k_test_test=None)`` -> :class:`StudentT`
        ``(location (M, K), scale (M, M) or None, df)``; the predictive covariance is
        ``scale * df / (df - 2)``.  With ``k_test_train=None`` it gives the prior on the
        training inputs' scale posterior: location ``y_train`` with zero scale.
    """
    check_positive(alpha, "alpha")
    check_positive(beta, "beta")
    k = get_attr(k_train_train, "nngp", "k_train_train")
    kd, was_numpy = as_kernel(k, "k_train_train", train=True)
    y, _, was_1d = as_targets(y_train, kd.shape[0])
    y = y.to(kd.dtype)
    factor = Factor(kd, check_diag_reg(diag_reg), bool(diag_reg_absolute_scale), "k_train_train")
    alpha_y = factor.solve(y)                                           # (N, K)
    q = float((y * alpha_y).sum())
    df = 2.0 * float(alpha) + y.numel()
    ratio = (2.0 * float(beta) + q) / df

    def predict_fn(k_test_train: Any = None, k_test_test: Any = None) -> StudentT:
        if k_test_train is None:
            loc = y
            scale = None if k_test_test is None else torch.zeros_like(kd)
        else:
            k_td, _ = as_kernel(get_attr(k_test_train, "nngp", "k_test_train"), "k_test_train")
            check_kernel_pair(k_td, kd.shape[0])
            k_td = k_td.to(kd.dtype)
            loc = k_td @ alpha_y
            scale = None
            if k_test_test is not None:
                k_tt, _ = as_kernel(get_attr(k_test_test, "nngp", "k_test_test"), "k_test_test")
                if k_tt.shape != (k_td.shape[0],) * 2:
                    raise ValueError(f"`k_test_test` must have shape {(k_td.shape[0],) * 2}, "
                                     f"got {tuple(k_tt.shape)}.")
                cov = k_tt.to(kd.dtype) - k_td @ factor.solve(k_td.T)
                scale = ratio * 0.5 * (cov + cov.T)
        loc = loc.squeeze(-1) if was_1d else loc
        return to_output(StudentT(loc, scale, df), was_numpy)

    return predict_fn
