"""Eigenlearning: the test error of kernel ridge regression from the kernel's eigenstructure.

Simon, Dickens, Karkada & DeWeese, "The Eigenlearning Framework: A Conservation Law
Perspective on Kernel Regression and Wide Neural Networks" (TMLR 2023; arXiv:2110.03922).
A kernel ``K(x, x') = sum_i lambda_i phi_i(x) phi_i(x')`` (orthonormal ``phi_i`` under the
data distribution), a target ``f(x) = sum_i v_i phi_i(x)`` observed with noise of variance
``noise^2``, ``n`` samples and ridge ``delta`` (predictor ``K(x, X) (K(X, X) + delta I)^-1 y``):

* the effective regularisation ``kappa > 0`` solves ``sum_i lambda_i / (lambda_i + kappa) + delta / kappa = n``;
* mode ``i``'s learnability is ``L_i = lambda_i / (lambda_i + kappa)`` (in ``[0, 1]``, and
  ``sum_i L_i = n - delta / kappa``: the conservation law);
* the overfitting coefficient is ``E0 = n / (n - sum_i L_i^2)``;
* the test MSE (against noisy test labels) is ``E = E0 (sum_i (1 - L_i)^2 v_i^2 + noise^2)``
  and the train MSE ``(delta / (n kappa))^2 E``.

Exact as ``n -> infinity`` for Gaussian eigenfeatures; a good approximation at modest ``n``
for real kernels (tests: within 10% from n = 50 to 2000).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from widelimit.analysis._checks import as_count, as_eigenvalues, as_float64
from widelimit._tensors import check_positive

__all__ = ["Eigenlearning", "solve_kappa", "solve_effective_ridge", "check_n_ridge", "as_coefficients", "eigenlearning", "LearningCurve", "target_coefficients",
           "predict_learning_curve"]


def _root(f: Callable[[float], float], lo: float, hi: float) -> float:
    """Root of a decreasing ``f`` with ``f(lo) > 0 > f(hi)`` (Brent on a log scale)."""
    from scipy.optimize import brentq
    g = lambda t: f(float(np.exp(t)))  # noqa: E731
    t = brentq(g, np.log(lo), np.log(hi), xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=500)
    return float(np.exp(t))


def solve_effective_ridge(df: Callable[[float], float], n: float, ridge: float, n_modes: float,
                          trace: float) -> float:
    """Root ``kappa`` of ``df(kappa) + ridge / kappa = n`` for a decreasing ``df`` with
    ``df(0+) = n_modes`` and ``df(kappa) <= trace / kappa``; the root lies in
    ``[ridge / n, (trace + ridge) / n]``. ``0.0`` when ``ridge = 0`` and ``n >= n_modes``."""
    f = lambda k: df(k) + ridge / k - n  # noqa: E731
    hi = (trace + ridge) / n
    if ridge > 0:
        lo = ridge / n
        if f(hi) >= 0:  # only at round-off: f(hi) <= 0 holds exactly
            return hi
        return lo if f(lo) <= 0 else _root(f, lo, hi)
    if n_modes <= n:
        return 0.0
    lo = hi
    while f(lo) <= 0:  # df(kappa) -> n_modes > n as kappa -> 0
        lo /= 16.0
        if lo < 1e-300:
            raise ValueError("could not bracket kappa: the eigenvalues span too many decades.")
    return _root(f, lo, hi) if f(hi) < 0 else hi


def check_n_ridge(n: Any, ridge: Any) -> tuple[float, float]:
    n = float(n)
    if not np.isfinite(n) or n <= 0:
        raise ValueError(f"`n` must be a positive number of samples, got {n}.")
    check_positive(ridge, "ridge", allow_zero=True)
    return n, float(ridge)


def solve_kappa(eigenvalues: Any, n: Any, ridge: float = 0.0) -> float:
    """The effective regularisation ``kappa``: ``sum_i lambda_i/(lambda_i + kappa) + ridge/kappa = n``.

    The left side decreases strictly in ``kappa``, so the root is unique; it lies in
    ``[ridge/n, (sum_i lambda_i + ridge)/n]`` and is found by bracketing (Brent's method on
    ``log kappa``). Returns ``0.0`` for ``ridge = 0`` when there are at most ``n`` positive
    eigenvalues (the kernel cannot interpolate more: under-parametrised least squares).
    ``n`` may be fractional (a continuous learning curve).
    """
    lam = as_eigenvalues(eigenvalues)
    n, ridge = check_n_ridge(n, ridge)
    df = lambda k: float(np.sum(lam / (lam + k)))  # noqa: E731
    return solve_effective_ridge(df, n, ridge, np.count_nonzero(lam), float(lam.sum()))


@dataclass(frozen=True)
class Eigenlearning:
    """Eigenlearning predictions for KRR at ``n`` samples and ridge ``ridge`` (NumPy, float64).

    Attributes:
        kappa: effective regularisation.
        learnabilities: ``L_i = lambda_i / (lambda_i + kappa)``, one per eigenvalue.
        overfitting_coefficient: ``E0 = n / (n - sum_i L_i^2)`` (``inf`` at interpolation
            threshold ``n = #modes`` without ridge).
        test_mse: ``E0 (sum_i (1 - L_i)^2 v_i^2 + noise^2)``, against noisy test labels
            (``test_mse - noise^2`` is the error against the clean target).
        train_mse: ``(ridge / (n kappa))^2 test_mse`` (0 when the kernel interpolates).
        bias: ``E0 sum_i (1 - L_i)^2 v_i^2``, the target's unlearned part, amplified.
        n: the number of samples; ridge, noise as given.
    """
    kappa: float
    learnabilities: np.ndarray
    overfitting_coefficient: float
    test_mse: float
    train_mse: float
    bias: float
    n: float
    ridge: float
    noise: float


def as_coefficients(coefficients: Any, m: int) -> np.ndarray:
    """Target eigen-coefficients as the per-mode mean square over outputs, ``(m,)``."""
    v = as_float64(coefficients, "coefficients")
    if v.ndim not in (1, 2) or v.shape[0] != m:
        raise ValueError(f"`coefficients` must have shape ({m},) or ({m}, K) to match "
                         f"the eigenvalues, got {v.shape}.")
    return v ** 2 if v.ndim == 1 else np.mean(v ** 2, axis=1)


def eigenlearning(eigenvalues: Any, coefficients: Any, n: Any, ridge: float = 0.0,
                  noise: float = 0.0) -> Eigenlearning:
    """Eigenlearning's predicted test / train MSE of KRR (module docstring for the equations).

    Args:
        eigenvalues: ``(M,)`` non-negative operator eigenvalues ``lambda_i`` (for a kernel
            matrix on M samples of the data distribution: its eigenvalues divided by M).
        coefficients: ``(M,)`` target eigen-coefficients ``v_i`` (``(M, K)`` for K outputs:
            the MSE is averaged over outputs); see :func:`target_coefficients`.
        n: number of training samples (> 0).
        ridge: ``delta >= 0`` (KRR solves ``(K(X, X) + delta I) alpha = y``, unnormalised).
        noise: standard deviation of the label noise.
    """
    lam = as_eigenvalues(eigenvalues)
    v = as_coefficients(coefficients, lam.size)
    check_positive(noise, "noise", allow_zero=True)
    kappa = solve_kappa(lam, n, ridge)
    n = float(n)
    if kappa == 0.0:  # ridgeless, at most n modes: every mode fully learned
        L = (lam > 0).astype(np.float64)
    else:
        L = lam / (lam + kappa)
    s2 = float(np.sum(L ** 2))
    e0 = np.inf if s2 >= n * (1 - 1e-12) else n / (n - s2)
    bias_sum = float(np.sum((1.0 - L) ** 2 * v))
    test = e0 * (bias_sum + float(noise) ** 2) if np.isfinite(e0) else np.inf
    train = 0.0 if kappa == 0.0 else (float(ridge) / (n * kappa)) ** 2 * test
    return Eigenlearning(kappa=kappa, learnabilities=L, overfitting_coefficient=e0, test_mse=test,
                         train_mse=train, bias=e0 * bias_sum, n=n, ridge=float(ridge), noise=float(noise))


def target_coefficients(eigenvectors: Any, y: Any) -> np.ndarray:
    """Eigen-coefficients ``v_i = <phi_i, f>`` estimated on M samples: ``U^T y / sqrt(M)``.

    ``eigenvectors`` are the unit-norm columns ``U`` (M, k) of the kernel matrix on the same
    samples (``phi_i(x_j) = sqrt(M) U_ji``); ``y`` is ``(M,)`` or ``(M, K)``.
    """
    u = as_float64(eigenvectors, "eigenvectors", ndim=2)
    y = as_float64(y, "y")
    if y.shape[0] != u.shape[0]:
        raise ValueError(f"`y` has {y.shape[0]} rows for {u.shape[0]} eigenvector entries.")
    return u.T @ y / np.sqrt(u.shape[0])


@dataclass(frozen=True)
class LearningCurve:
    """Predicted vs measured KRR test MSE at each training-set size (NumPy arrays).

    ``measured`` is the mean over seeds of the MSE on ``n_test`` held-out pool points and
    ``measured_std`` its standard deviation over seeds; ``predicted_pool`` is eigenlearning's
    :attr:`Eigenlearning.test_mse` with the pool as the population, ``predicted`` the
    held-out error implied by it (see :func:`predict_learning_curve`); ``kappa`` per ``n``.
    """
    ns: np.ndarray
    predicted: np.ndarray
    predicted_pool: np.ndarray
    measured: np.ndarray
    measured_std: np.ndarray
    kappa: np.ndarray

    @property
    def relative_error(self) -> np.ndarray:
        """``|predicted - measured| / measured``."""
        return np.abs(self.predicted - self.measured) / self.measured


def _krr_mse(k: torch.Tensor, y: torch.Tensor, tr: np.ndarray, te: np.ndarray, ridge: float) -> float:
    a = k[np.ix_(tr, tr)] + ridge * torch.eye(len(tr), dtype=k.dtype)
    alpha = torch.linalg.solve(a, y[tr])
    err = k[np.ix_(te, tr)] @ alpha - y[te]
    return float((err ** 2).mean())


def predict_learning_curve(kernel_fn: Callable[..., Any], x_pool: Any, y_pool: Any,
                           ns: Sequence[int], *, ridge: float = 0.0, n_test: Optional[int] = None,
                           seeds: Sequence[int] = (0, 1, 2), noise: float = 0.0,
                           get: Optional[str] = None) -> LearningCurve:
    """Eigenlearning's learning curve vs KRR measured on random subsets of a pool.

    The operator's eigenvalues and the target's coefficients are estimated from the pool's
    kernel matrix ``K`` (M, M): ``lambda_i = eig_i(K) / M``, ``v = U^T y / sqrt(M)``. For each
    seed the pool is permuted, its first ``n_test`` points are the test set and the next ``n``
    the training set of KRR with ridge ``ridge`` (on the unnormalised kernel).

    With the pool as the population, eigenlearning predicts the error averaged over the pool
    ``E_pool``, of which a fraction ``n / M`` are training points (error ``E_train``). The
    held-out error is therefore predicted as ``(E_pool - (n/M) E_train) / (1 - n/M)``
    (:attr:`LearningCurve.predicted`; the uncorrected ``E_pool`` is ``predicted_pool``).
    The pool's spectrum stops at M modes, so the prediction degrades as ``n`` nears ``M``:
    on digits (M = 1797, ReLU NTK) it is within 10% up to ``n ~ M / 4``, 17% at ``M / 2``.

    Args:
        kernel_fn: ``kernel_fn(x1, x2)`` -> (N1, N2) kernel matrix (e.g. a widelimit
            ``net.kernel_fn`` with ``get="ntk"``, or any callable).
        x_pool: ``(M, ...)`` inputs; y_pool: ``(M,)`` or ``(M, K)`` targets.
        ns: training-set sizes, each with ``n + n_test <= M``.
        ridge: KRR ridge ``delta >= 0`` (> 0 recommended when some ``n`` exceeds the
            kernel's numerical rank).
        n_test: held-out points per seed (default ``M // 4``).
        seeds: permutation seeds (NumPy generators; the global RNG is untouched).
        noise: label-noise standard deviation to add to the prediction (0 when ``y_pool``
            is the noisy data itself: its noise is then part of the coefficients).
        get: passed as ``kernel_fn(x1, x2, get=get)`` when given.
    """
    if not callable(kernel_fn):
        raise TypeError(f"`kernel_fn` must be callable, got {type(kernel_fn).__name__}.")
    m = len(x_pool)
    if m < 2:
        raise ValueError(f"`x_pool` needs at least 2 points, got {m}.")
    y = as_float64(y_pool, "y_pool")
    if y.ndim not in (1, 2) or y.shape[0] != m:
        raise ValueError(f"`y_pool` must have shape ({m},) or ({m}, K), got {y.shape}.")
    n_test = max(1, m // 4) if n_test is None else as_count(n_test, "n_test")
    ns_arr = np.array([as_count(n, "ns") for n in ns], dtype=np.int64)
    if ns_arr.size == 0:
        raise ValueError("`ns` is empty; give at least one training-set size.")
    if ns_arr.max() + n_test > m:
        raise ValueError(f"`ns` has n = {ns_arr.max()} but the pool has only {m} points with "
                         f"n_test = {n_test} held out: need n + n_test <= {m}.")
    if len(seeds) == 0:
        raise ValueError("`seeds` is empty.")
    check_positive(ridge, "ridge", allow_zero=True)
    k = kernel_fn(x_pool, x_pool) if get is None else kernel_fn(x_pool, x_pool, get=get)
    k = torch.as_tensor(np.asarray(k) if not isinstance(k, torch.Tensor) else k).detach().double().cpu()
    if k.shape != (m, m):
        raise ValueError(f"`kernel_fn` returned shape {tuple(k.shape)} for {m} pool points; "
                         f"expected ({m}, {m}) (pass `get=` for a widelimit kernel_fn).")
    from widelimit.analysis.spectrum import spectrum
    sp = spectrum((k + k.T) / 2)
    lam = np.clip(sp.eigenvalues.numpy(), 0, None) / m
    v = target_coefficients(sp.eigenvectors.numpy(), y)
    preds = [eigenlearning(lam, v, int(n), ridge, noise) for n in ns_arr]
    yt = torch.from_numpy(y.reshape(m, -1))
    meas = np.empty((len(seeds), ns_arr.size))
    for s, seed in enumerate(seeds):
        perm = np.random.default_rng(seed).permutation(m)
        te = perm[:n_test]
        for j, n in enumerate(ns_arr):
            meas[s, j] = _krr_mse(k, yt, perm[n_test:n_test + n], te, float(ridge))
    frac = ns_arr / m
    pool = np.array([p.test_mse for p in preds])
    held_out = (pool - frac * np.array([p.train_mse for p in preds])) / (1 - frac)
    return LearningCurve(ns=ns_arr, predicted=held_out, predicted_pool=pool,
                         measured=meas.mean(0), measured_std=meas.std(0),
                         kappa=np.array([p.kappa for p in preds]))
