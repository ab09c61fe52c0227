r"""The lazy (kernel) infinite-width limits in the API of the feature-learning limits.

An infinitely wide network in the NTK parametrization trained by gradient descent on the
squared loss follows kernel gradient descent with its NTK (Jacot et al. 2018; Lee et al.
2019); trained in the last layer only it follows the NNGP kernel.  Its mean over random
initialisations at time ``lr * steps`` is

.. math:: \mu_t(x) = \Theta_{xX}\Theta^{-1}(I - e^{-\eta t \Theta / (N K)}) Y

(gradient *flow* at time ``eta t``; :func:`widelimit.predict.gradient_descent_mse_ensemble`,
whose loss ``||f - Y||^2 / (2 N K)`` the feature-learning limits use too).  Its features
do not move: this is the comparison point for :class:`~widelimit.limits.MuPLimitLinear1LP`.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from widelimit._tensors import as_input, check_positive, to_output
from widelimit.limits._common import mse

__all__ = ["KernelLimit", "NTKLimit", "NNGPLimit"]


class KernelLimit:
    """Kernel-regime limit of a widelimit architecture (``net`` from ``widelimit.layers``,
    anything with ``kernel_fn(x1, x2, get)``), trained on the full batch.

    Args:
        net: the architecture description, e.g. ``L.serial(L.Dense(512), L.Dense(10))``.
        kind: ``"ntk"`` (all layers trained) or ``"nngp"`` (readout only).
        diag_reg: ridge on the kernel's diagonal (see ``gradient_descent_mse``).

    ``fit(x, y, lr, steps)`` stores the training data and the loss curve ``loss_curve_``
    (steps + 1 values, the mean predictor's loss at t = 0, lr, ..., lr * steps);
    ``predict(x)`` is the mean output at t = lr * steps (``steps=None``: t = infinity,
    kernel regression).
    """

    def __init__(self, net: Any, kind: str = "ntk", diag_reg: float = 0.0) -> None:
        if not callable(getattr(net, "kernel_fn", None)) and not callable(net):
            raise TypeError(f"`net` must be a widelimit layer (with .kernel_fn) or a callable "
                            f"kernel_fn(x1, x2, get), got {type(net).__name__}.")
        if kind not in ("ntk", "nngp"):
            raise ValueError(f"`kind` must be 'ntk' or 'nngp', got {kind!r}.")
        check_positive(diag_reg, "diag_reg", allow_zero=True)
        self.net, self.kind, self.diag_reg = net, kind, float(diag_reg)

    def fit(self, x: Any, y: Any, lr: float, steps: Optional[int]) -> "KernelLimit":
        """Gradient flow at learning rate ``lr`` for ``steps`` steps (None: to convergence)."""
        from widelimit.predict import gradient_descent_mse_ensemble
        xt, _ = as_input(x, "x")
        yt, _ = as_input(y, "y", min_ndim=1)
        if yt.shape[0] != xt.shape[0]:
            raise ValueError(f"`y` must have one row per input ({xt.shape[0]}), got shape {tuple(yt.shape)}.")
        check_positive(lr, "lr")
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
            raise ValueError(f"`steps` must be None or a non-negative integer, got {steps!r}.")
        self.lr, self.steps = float(lr), steps
        self.x_train_, self._y_shape = xt, tuple(yt.shape)
        self.predict_fn_ = gradient_descent_mse_ensemble(self.net, xt, yt, learning_rate=self.lr,
                                                         diag_reg=self.diag_reg)
        if steps is None:
            f = self.predict_fn_(None, None, get=self.kind)
            self.loss_curve_ = mse(f, yt.to(f.dtype)).reshape(1).double()
        else:
            f = self.predict_fn_(torch.arange(steps + 1, dtype=torch.float64), None, get=self.kind)
            yy = yt.to(f.dtype)
            self.loss_curve_ = torch.stack([mse(ft.reshape(yy.shape), yy) for ft in f]).double()
        return self

    def predict(self, x: Any) -> Any:
        """Mean output of the trained infinite-width ensemble on ``x`` (NumPy in, NumPy out)."""
        if not hasattr(self, "predict_fn_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit(x, y, lr, steps) first.")
        xt, was_numpy = as_input(x, "x")
        if xt.shape[1:] != self.x_train_.shape[1:]:
            raise ValueError(f"`x` must have feature shape {tuple(self.x_train_.shape[1:])} like the "
                             f"training inputs, got shape {tuple(xt.shape)}.")
        out: Tensor = self.predict_fn_(self.steps, xt, get=self.kind)
        return to_output(out, was_numpy)


class NTKLimit(KernelLimit):
    """:class:`KernelLimit` with ``kind="ntk"``: the lazy limit, all layers trained."""

    def __init__(self, net: Any, diag_reg: float = 0.0) -> None:
        super().__init__(net, "ntk", diag_reg)


class NNGPLimit(KernelLimit):
    """:class:`KernelLimit` with ``kind="nngp"``: only the readout trained."""

    def __init__(self, net: Any, diag_reg: float = 0.0) -> None:
        super().__init__(net, "nngp", diag_reg)
