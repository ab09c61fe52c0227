"""Test risk of random-feature ridge regression at a finite number of features.

The RF eigenframework of Simon, Karkada, Ghosh & Belkin, "More is Better in Modern Machine
Learning: when Infinite Overparameterization is Optimal and Overfitting is Obligatory"
(ICLR 2024; arXiv:2311.14646), equivalently the deterministic equivalent of Bach (2024) and
Defilippis, Loureiro & Misiakiewicz (2024). ``k`` random features ``g(x) in R^k`` with
``E_w[g(x) . g(x')] = K(x, x') = sum_i lambda_i phi_i(x) phi_i(x')``; the predictor
``g(x)^T a`` with ``a = argmin ||G a - y||^2 + delta ||a||^2`` is KRR with the random
kernel ``G G^T``. Writing ``df(g) = sum_i lambda_i / (lambda_i + g)``,
``df2(g) = sum_i lambda_i^2 / (lambda_i + g)^2``:

* ``gamma > 0`` and ``kappa = gamma (1 - df(gamma) / k)`` solve ``df(gamma) + delta / kappa = n``;
* ``sum_j L_j^2 = df(gamma) - kappa sum_i lambda_i / (lambda_i + gamma)^2 / (1 - df2(gamma) / k)``,
  ``E0 = n / (n - sum_j L_j^2)``;
* ``bias = sum_i v_i^2 gamma / (lambda_i + gamma) - kappa / (1 - df2(gamma) / k) sum_i v_i^2 lambda_i / (lambda_i + gamma)^2``;
* ``test MSE = E0 (bias + noise^2)``, train MSE ``(delta / (n kappa))^2`` times it.

(Derived here as eigenlearning of the random kernel, whose resolvent has the deterministic
equivalent ``kappa (T + kappa)^-1 ~ gamma (Lambda + gamma)^-1``, differentiated in
``kappa``; ``1 / E0`` agrees with Defilippis et al.'s ``1 - Upsilon``.) As ``k -> inf``,
``gamma -> kappa`` and this is :func:`~widelimit.analysis.eigenlearning`.

Random features of a network's NNGP/NTK with ``E[g g'^T] = K`` come from
:func:`widelimit.random_features` (the one place the library makes them; measured against
this prediction in tests/analysis/test_rf_risk.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from widelimit._tensors import check_positive
from widelimit.analysis._checks import as_eigenvalues
from widelimit.analysis.eigenlearning import (_root, as_coefficients, check_n_ridge,
                                              solve_effective_ridge)

__all__ = ["RFEigenlearning", "rf_eigenlearning"]


@dataclass(frozen=True)
class RFEigenlearning:
    """Predicted risk of ridge regression on ``n_features`` random features (NumPy floats).

    Attributes:
        kappa: effective ridge of the random-feature kernel; gamma: that of the limiting
            kernel (``gamma >= kappa``, equal as ``n_features -> inf``).
        overfitting_coefficient: ``E0``; test_mse / train_mse / bias as in the module docstring.
    """
    kappa: float
    gamma: float
    overfitting_coefficient: float
    test_mse: float
    train_mse: float
    bias: float
    n: float
    n_features: float
    ridge: float
    noise: float


def _gamma_of_kappa(lam: np.ndarray, kappa: float, k: float, n_pos: int) -> float:
    """``gamma`` with ``gamma (1 - df(gamma)/k) = kappa`` (increasing in gamma where positive);
    in ``[kappa, kappa + sum(lam)/k]``. At ``kappa = 0``: ``df(gamma) = k`` (0 if too few modes)."""
    df = lambda g: float(np.sum(lam / (lam + g)))  # noqa: E731
    if kappa == 0.0:
        if n_pos <= k:
            return 0.0
        hi = lam.sum() / k
        lo = hi
        while df(lo) <= k:
            lo /= 16.0
        return _root(lambda g: df(g) - k, lo, hi)
    h = lambda g: kappa - g * (1.0 - df(g) / k)  # noqa: E731  decreasing through the root
    lo, hi = kappa, kappa + lam.sum() / k
    if h(hi) >= 0:
        return hi
    return lo if h(lo) <= 0 else _root(h, lo, hi)


def rf_eigenlearning(eigenvalues: Any, coefficients: Any, n: Any, n_features: Any,
                     ridge: float = 0.0, noise: float = 0.0) -> RFEigenlearning:
    """Predicted test MSE of random-feature ridge regression (module docstring).

    Args:
        eigenvalues: ``(M,)`` operator eigenvalues of the limiting kernel (its kernel
            matrix's eigenvalues divided by the number of samples).
        coefficients: ``(M,)`` or ``(M, K)`` target eigen-coefficients
            (:func:`~widelimit.analysis.target_coefficients`).
        n: training samples; n_features: number of random features ``k`` (``float('inf')``
            for the kernel limit).
        ridge: ``delta >= 0`` on the weights (the random kernel ``G G^T`` with ``G`` scaled
            so that ``E[G G^T] = K``); noise: label-noise standard deviation.
    """
    lam = as_eigenvalues(eigenvalues)
    v2 = as_coefficients(coefficients, lam.size)
    n, ridge = check_n_ridge(n, ridge)
    if not (isinstance(n_features, (int, float, np.integer, np.floating)) and not isinstance(n_features, bool)
            and n_features > 0):
        raise ValueError(f"`n_features` must be a positive number (or float('inf')), got {n_features!r}.")
    check_positive(noise, "noise", allow_zero=True)
    k = float(n_features)
    n_pos = int(np.count_nonzero(lam))
    if np.isinf(k):
        g_of = lambda kap: kap  # noqa: E731
    else:
        g_of = lambda kap: _gamma_of_kappa(lam, kap, k, n_pos)  # noqa: E731
    df = lambda kap: float(np.sum(lam / (lam + g_of(kap)))) if kap > 0 else float(min(k, n_pos))  # noqa: E731
    kappa = solve_effective_ridge(df, n, ridge, min(k, n_pos), float(lam.sum()))
    gamma = g_of(kappa)
    pos = lam > 0
    if gamma == 0.0:  # every mode in reach of the features, learned exactly
        frac = np.where(pos, 0.0, 1.0)
        s1 = df2 = 0.0
        dfg = float(n_pos)
    else:
        frac = gamma / (lam + gamma)          # 1 for zero eigenvalues
        dfg = float(np.sum(lam / (lam + gamma)))
        df2 = float(np.sum((lam / (lam + gamma)) ** 2))
        s1 = lam / (lam + gamma) ** 2
    slope = 1.0 if np.isinf(k) else 1.0 - df2 / k
    sum_l2 = dfg - kappa * float(np.sum(s1)) / slope
    bias = float(np.sum(v2 * frac)) - kappa / slope * float(np.sum(v2 * s1))
    e0 = np.inf if sum_l2 >= n * (1 - 1e-12) else n / (n - sum_l2)
    test = e0 * (bias + float(noise) ** 2) if np.isfinite(e0) else np.inf
    train = 0.0 if kappa == 0.0 else (ridge / (n * kappa)) ** 2 * test
    return RFEigenlearning(kappa=kappa, gamma=gamma, overfitting_coefficient=e0, test_mse=test,
                           train_mse=train, bias=e0 * bias, n=n, n_features=k, ridge=ridge,
                           noise=float(noise))
