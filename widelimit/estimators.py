r"""scikit-learn estimators: infinite ensembles of infinitely wide networks.

``NTKRegressor`` predicts the mean (and the standard deviation) of an infinite ensemble of
infinite-width networks of architecture ``net`` trained by gradient descent on MSE for time
``t`` (``t=None``: to convergence), i.e. :func:`widelimit.predict.gradient_descent_mse_ensemble`
(Lee et al., 2019).  ``kernel="nngp"`` trains only the readout (equivalently: the NNGP
posterior mean at ``t=None``).  ``NTKClassifier`` regresses one-hot targets and predicts the
argmax; ``decision_function`` gives the softmax-free scores.

Both follow the scikit-learn estimator API (``get_params``/``set_params``, ``Pipeline``,
``GridSearchCV``); they need ``scikit-learn`` (``pip install widelimit[sklearn]``).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch

from widelimit.predict.mse import gradient_descent_mse_ensemble

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError:  # scikit-learn is optional: the estimators then explain how to get it
    _HAVE_SKLEARN = False

    class BaseEstimator:  # type: ignore[no-redef]
        def __init__(self, *args, **kwargs):
            raise ImportError(f"{type(self).__name__} needs scikit-learn: "
                              f"pip install 'widelimit[sklearn]'.")

    class ClassifierMixin:  # type: ignore[no-redef]
        pass

    class RegressorMixin:  # type: ignore[no-redef]
        pass
else:
    _HAVE_SKLEARN = True

__all__ = ["NTKRegressor", "NTKClassifier", "default_net"]


def default_net():
    """FC ReLU network, two hidden layers: ``Dense(512, 1.5, 0.05) -> Relu`` twice, readout."""
    from widelimit import layers as L
    return L.serial(L.Dense(512, W_std=1.5, b_std=0.05), L.Relu(),
                    L.Dense(512, W_std=1.5, b_std=0.05), L.Relu(),
                    L.Dense(1, W_std=1.5, b_std=0.05))


class _NTKBase(BaseEstimator):
    _batch = 512

    def __init__(self, net: Any = None, t: Optional[float] = None, diag_reg: float = 1e-4,
                 kernel: str = "ntk", learning_rate: float = 1.0,
                 diag_reg_absolute_scale: bool = False):
        if not _HAVE_SKLEARN:
            BaseEstimator.__init__(self)
        self.net = net
        self.t = t
        self.diag_reg = diag_reg
        self.kernel = kernel
        self.learning_rate = learning_rate
        self.diag_reg_absolute_scale = diag_reg_absolute_scale

    def _check_params(self) -> None:
        if self.kernel not in ("ntk", "nngp"):
            raise ValueError(f"`kernel` must be 'ntk' or 'nngp', got {self.kernel!r}.")
        if self.t is not None and (not isinstance(self.t, (int, float, np.floating, np.integer))
                                   or isinstance(self.t, bool) or math.isnan(self.t) or self.t < 0):
            raise ValueError(f"`t` must be None (infinite time) or a number >= 0, got {self.t!r}.")
        for name in ("diag_reg", "learning_rate"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v) or v < 0 \
                    or (name == "learning_rate" and v == 0):
                raise ValueError(f"`{name}` must be a finite number {'> 0' if name == 'learning_rate' else '>= 0'}, "
                                 f"got {v!r}.")
        if self.net is not None and not hasattr(self.net, "kernel_fn"):
            raise ValueError(f"`net` must be a widelimit layer (with .kernel_fn) or None, "
                             f"got {type(self.net).__name__}.")

    def _fit_targets(self, X: np.ndarray, Y: np.ndarray) -> None:
        """Set up the ensemble predictor on (X, Y (N, K)); kernels are computed here."""
        self._check_params()
        self.net_ = default_net() if self.net is None else self.net
        self.X_train_ = X
        self.Y_train_ = Y
        self._make_fn()

    def _make_fn(self) -> None:
        fn = gradient_descent_mse_ensemble(self.net_, torch.tensor(self.X_train_),
                                           torch.tensor(self.Y_train_),
                                           learning_rate=float(self.learning_rate),
                                           diag_reg=float(self.diag_reg),
                                           diag_reg_absolute_scale=bool(self.diag_reg_absolute_scale))
        fn(None if self.t is None else float(self.t), None, self.kernel)  # kernels + factorisation
        self._fn = fn

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_fn", None)                  # closures do not pickle; rebuilt on first use
        return state

    def _mean_std(self, X: np.ndarray, return_std: bool) -> tuple[np.ndarray, Optional[np.ndarray]]:
        t = None if self.t is None else float(self.t)
        if getattr(self, "_fn", None) is None:
            self._make_fn()
        means, stds = [], []
        for i in range(0, X.shape[0], self._batch):      # batches: the covariance is only M_b x M_b
            xb = torch.tensor(X[i:i + self._batch])
            out = self._fn(t, xb, self.kernel, compute_cov=return_std)
            if return_std:
                means.append(out.mean.numpy())
                var = torch.diagonal(out.covariance).clamp_min(0.0)
                stds.append(var.sqrt().numpy())
            else:
                means.append(out.numpy())
        mean = np.concatenate(means) if means else np.zeros((0, self.Y_train_.shape[1]))
        std = (np.concatenate(stds) if stds else np.zeros(0)) if return_std else None
        return mean, std

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class NTKRegressor(RegressorMixin, _NTKBase):
    """Infinite ensemble of infinitely wide networks trained on MSE for time ``t``.

    Args:
        net: a widelimit architecture (``widelimit.layers``); None for :func:`default_net`.
        t: training time in steps (None = to convergence, the kernel ridge / GP mean).
        diag_reg: ridge on the train kernel's diagonal (relative to its mean diagonal).
        kernel: ``"ntk"`` (all layers trained) or ``"nngp"`` (readout only).
        learning_rate: gradient-descent step size (time is ``learning_rate * t``).
        diag_reg_absolute_scale: ``diag_reg`` in absolute units.

    Attributes after ``fit``: ``net_``, ``X_train_``, ``Y_train_``, ``n_features_in_``.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self._y_1d = y.ndim == 1
        self._fit_targets(X, y.reshape(len(y), -1))
        return self

    def predict(self, X, return_std: bool = False):
        """Ensemble mean; with ``return_std=True`` also its standard deviation (same shape)."""
        check_is_fitted(self, "X_train_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        mean, std = self._mean_std(X, return_std)
        if self._y_1d:
            mean = mean[:, 0]
        elif std is not None:
            std = np.repeat(std[:, None], mean.shape[1], axis=1)
        return (mean, std) if return_std else mean


class NTKClassifier(ClassifierMixin, _NTKBase):
    """Classification by regressing one-hot targets with an infinite NTK/NNGP ensemble.

    Same arguments as :class:`NTKRegressor`.  ``decision_function`` returns the ensemble's
    mean outputs (softmax-free scores; for two classes the difference, class 1 minus class 0),
    ``predict`` their argmax, ``predict(X, return_std=True)`` also the per-example standard
    deviation of the scores.
    """

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self._encoder = LabelEncoder().fit(y)
        self.classes_ = self._encoder.classes_
        codes = self._encoder.transform(y)
        onehot = np.eye(len(self.classes_), dtype=np.float64)[codes]
        self._fit_targets(X, onehot)
        return self

    def decision_function(self, X):
        check_is_fitted(self, "X_train_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        scores, _ = self._mean_std(X, False)
        if len(self.classes_) == 2:
            return scores[:, 1] - scores[:, 0]
        return scores

    def predict(self, X, return_std: bool = False):
        check_is_fitted(self, "X_train_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        scores, std = self._mean_std(X, return_std)
        labels = self.classes_[np.argmax(scores, axis=1)]
        return (labels, std) if return_std else labels
