r"""The exact infinite-width muP limit of a one-hidden-layer linear network trained by SGD
(Yang & Hu 2021, "Feature Learning in Infinite-Width Neural Networks", Sec. 6-7: the
Tensor Programs IV construction used there for Word2Vec and MAML).

**The network.** ``f(x) = (1/n) V U x`` with ``U`` (n, d) and ``V`` (K, n) of iid entries,
``Var U = s_u``, ``Var V = s_v``, trained by SGD on ``L = ||f(X_b) - Y_b||^2 / (2 B K)`` with
the muP learning rates ``n eta_u`` (on U) and ``n eta_v`` (on V).  With the gradient of the
loss in the outputs ``g_i = (f(x_i) - y_i) / (B K)`` the updates are

.. math::
    \Delta U = -\eta_u \textstyle\sum_i V^\top g_i x_i^\top, \qquad
    \Delta V = -\eta_v \textstyle\sum_i g_i (U x_i)^\top ,

so every coordinate of U, V and of the features ``h = U x`` moves by Theta(1) and
``f`` by Theta(1): the network learns features at every width (muP).

**The coefficient representation.** Put the d columns of ``U_0`` and the K rows of ``V_0``
side by side, ``Z = [U_0, V_0^T]`` (n, d + K).  ``Delta U`` lies in the span of the rows of V
and ``Delta V^T`` in the span of the columns of U, so by induction

.. math::
    U_t = Z P_t, \quad V_t^\top = Z Q_t, \quad
    P_0 = \begin{pmatrix} I_d \\ 0 \end{pmatrix},\ Q_0 = \begin{pmatrix} 0 \\ I_K \end{pmatrix},

.. math::
    f_t(x) = Q_t^\top G P_t x, \qquad
    P_{t+1} = P_t - \eta_u Q_t \textstyle\sum_i g_i x_i^\top, \qquad
    Q_{t+1} = Q_t - \eta_v P_t \textstyle\sum_i x_i g_i^\top,

with ``G = Z^T Z / n`` and ``g_i`` computed from ``f_t``.  This is *exact* at every finite
width: the finite network is this (d + K)-dimensional recursion driven by the empirical
Gram matrix of its initial vectors.  As ``n -> infinity``, ``G -> Sigma = diag(s_u I_d,
s_v I_K)`` almost surely (law of large numbers, fluctuations O(n^{-1/2})) and the
recursion is continuous in ``G``, so the limit is the same recursion with ``G = Sigma``,
and the finite network deviates from it by O(n^{-1/2}) at any fixed step.  In the limit
``f_0 = 0`` (the cross block of ``G`` vanishes) and the learned feature kernel is
``lim h(x).h(x')/n = x^T P_t^T Sigma P_t x'``, which moves away from its initial value
``s_u x^T x'`` during training (feature learning; in the NTK limit it stays put).

**One step in closed form** (derived without the recursion): from ``f_0 = 0``,
``g_i = -y_i/(B K)``, and ``f_1 - f_0 = (1/n)[Delta V U_0 + V_0 Delta U + Delta V Delta U] x``.
The three terms tend to ``-eta_v s_u sum_i g_i <x_i, x>``, ``-eta_u s_v sum_i g_i <x_i, x>``
and 0 (it carries ``U_0^T V_0^T / n -> 0``), so

.. math::
    f_1(x) = \frac{\eta_v s_u + \eta_u s_v}{B K} \sum_{i \in b} y_i \langle x_i, x\rangle ,

one step of kernel gradient descent with the kernel ``(eta_v s_u + eta_u s_v) x^T x'``
(the initial tangent kernel).  From the second step on the ``Delta V Delta U`` term
survives and the limit departs from the kernel regime.

**Mapping to** ``wl.parametrize(..., scheme="mup")`` (Tensor Programs V Table 8 form,
relative to a base width b; :func:`widelimit.limits.mup_linear_1lp`): the PyTorch model
computes ``f = (b/n) V' U x`` with ``Var U = input_var / d`` (PyTorch's default uniform
init has ``input_var = 1/3``), ``Var V' = output_var / b`` and SGD learning rates
``lr n / b`` on both layers.  With ``V = b V'`` this is the network above with
``s_u = input_var / d``, ``s_v = b output_var``, ``eta_u = lr / b``, ``eta_v = lr b``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from widelimit._tensors import check_positive, to_output
from widelimit.limits._common import (DivergenceError, batch_schedule, check_lr_steps, check_x,
                                      check_xy, diverged, mse)
from widelimit.parametrization.abc import get_scheme

__all__ = ["MuPLimitLinear1LP", "LinearCoefficients"]

_FEATURE_LEARNING = ("mup", "mf")   # identical for one hidden layer (no hidden-to-hidden matrix)


@dataclass
class LinearCoefficients:
    """State of the coefficient recursion: ``U = Z p``, ``V^T = Z q``, ``G = Z^T Z / n``.

    Attributes:
        p: (d + K, d) coefficients of the columns of U.
        q: (d + K, K) coefficients of the rows of V.
        gram: (d + K, d + K) Gram matrix of the initial vectors (``Sigma`` in the limit,
            ``Z^T Z / n`` for a finite network).
    """

    p: Tensor
    q: Tensor
    gram: Tensor

    @classmethod
    def initial(cls, gram: Tensor, d_in: int, d_out: int) -> "LinearCoefficients":
        eye = torch.eye(d_in + d_out, dtype=gram.dtype, device=gram.device)
        return cls(eye[:, :d_in].clone(), eye[:, d_in:].clone(), gram)

    def weight(self) -> Tensor:
        """Effective linear map (d, K): ``f(x) = x @ weight``."""
        return self.p.T @ self.gram @ self.q

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight()

    def step(self, xb: Tensor, yb: Tensor, lr_u: float, lr_v: float) -> None:
        """One SGD step on the batch ``(xb, yb)`` (both updates from the current state)."""
        g = (self.forward(xb) - yb) / yb.numel()          # (B, K): rows g_i
        m = g.T @ xb                                       # (K, d) = sum_i g_i x_i^T
        p_new = self.p - lr_u * (self.q @ m)
        self.q = self.q - lr_v * (self.p @ m.T)
        self.p = p_new


class MuPLimitLinear1LP:
    r"""Infinite-width muP limit of ``f(x) = V U x`` (one hidden layer, no nonlinearity,
    no biases) trained by SGD on the squared loss; see the module docstring for the
    derivation.

    It is the width -> infinity limit of ``wl.limits.mup_linear_1lp(d_in, d_out, width,
    base_width)`` (``wl.parametrize(..., scheme="mup")`` of two bias-free ``nn.Linear``)
    trained with ``wl.optim.SGD(model, lr)`` on the same batches.

    Args:
        d_in, d_out: input and output dimensions.
        base_width: the base width b of the muP model (at width b it is PyTorch's
            default model).
        input_var: ``d_in * Var(U_ij)`` (1/3 for PyTorch's default uniform init, 1 for
            ``N(0, 1/d_in)``).
        output_var: ``b * Var(V'_ij)`` of the base-relative readout (1/3 for PyTorch's
            default init, 0 for a zero-initialised readout).
        scheme: ``"mup"`` (or ``"mf"``, identical for one hidden layer).  Other schemes
            have no feature-learning limit: use :class:`widelimit.limits.NTKLimit`.
        divergence_factor: fit raises :class:`DivergenceError` once the training loss
            exceeds this multiple of ``max(initial loss, 1)`` or is not finite.

    Attributes (after ``fit``): ``coef_`` (:class:`LinearCoefficients`), ``loss_curve_``
    (float64 tensor (steps + 1,): the full training loss before each step and at the end).
    """

    def __init__(self, d_in: int, d_out: int, *, base_width: int = 1, input_var: float = 1 / 3,
                 output_var: float = 1 / 3, scheme: str = "mup", divergence_factor: float = 1e8) -> None:
        for name, v in (("d_in", d_in), ("d_out", d_out), ("base_width", base_width)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}.")
        check_positive(input_var, "input_var")
        check_positive(output_var, "output_var", allow_zero=True)
        check_positive(divergence_factor, "divergence_factor")
        name = get_scheme(scheme).name
        if name not in _FEATURE_LEARNING:
            raise ValueError(
                f"`scheme` must be 'mup' (or 'mf'): the {name!r} parametrization has no "
                "feature-learning infinite-width limit (Yang & Hu 2021, Thm. 3.2: its limit is "
                "kernel gradient descent or trivial); use wl.limits.NTKLimit for the kernel limit.")
        self.d_in, self.d_out, self.base_width = d_in, d_out, base_width
        self.input_var, self.output_var, self.scheme = float(input_var), float(output_var), name
        self.divergence_factor = float(divergence_factor)

    # -- the parametrization in the canonical form of the module docstring ---------------
    @property
    def variances(self) -> tuple[float, float]:
        """``(s_u, s_v)``: variances of the entries of U and of ``V = b V'``."""
        return self.input_var / self.d_in, self.base_width * self.output_var

    def learning_rates(self, lr: float) -> tuple[float, float]:
        """``(eta_u, eta_v)`` for the base learning rate ``lr``."""
        return lr / self.base_width, lr * self.base_width

    def limit_gram(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """``Sigma = diag(s_u I_d, s_v I_K)``: the limit of ``Z^T Z / n``."""
        s_u, s_v = self.variances
        return torch.diag(torch.cat([torch.full((self.d_in,), s_u, dtype=dtype),
                                     torch.full((self.d_out,), s_v, dtype=dtype)]))

    def initial_ntk(self, x1: Any, x2: Any = None, lr: float = 1.0) -> Any:
        """Initial tangent kernel per unit ``lr``: ``(eta_v s_u + eta_u s_v) x1 x2^T`` (N1, N2).

        ``wl.predict.max_learning_rate(lim.initial_ntk(x), y.numel())`` is the largest
        stable ``lr`` of the kernel regime; the feature-learning dynamics can diverge
        below it, since the effective kernel grows during training."""
        a, was_numpy = check_x(x1, self.d_in, "x1")
        b = a if x2 is None else check_x(x2, self.d_in, "x2")[0]
        s_u, s_v = self.variances
        e_u, e_v = self.learning_rates(lr)
        return to_output((e_v * s_u + e_u * s_v) * (a.double() @ b.double().T), was_numpy)

    # -- training ------------------------------------------------------------------------
    def fit(self, x: Any, y: Any, lr: float, steps: int, batch_size: Optional[int] = None,
            seed: int = 0, gram: Optional[Tensor] = None) -> "MuPLimitLinear1LP":
        """Train the limit by SGD for ``steps`` steps (full batch unless ``batch_size``).

        Args:
            x: (N, d_in) inputs; y: (N, d_out) targets ((N,) if d_out == 1).
            lr: base learning rate (as passed to ``wl.optim.SGD``).
            steps: number of SGD steps.
            batch_size: None (full batch) or the minibatch size; batches follow
                :func:`~widelimit.limits._common.batch_schedule` with ``seed``.
            gram: advanced: the (d + K, d + K) Gram matrix ``Z^T Z / n`` of a finite
                network's initial vectors; the recursion then reproduces that finite
                network exactly (default: the limit ``Sigma``).

        Returns:
            self.

        Raises:
            DivergenceError: the loss blew up (the message gives the step and the kernel
                regime's stability bound); the model is left unfitted.
        """
        xt, yt, _ = check_xy(x, y, self.d_in, self.d_out)
        bs = check_lr_steps(lr, steps, batch_size, xt.shape[0])
        xt, yt = xt.double(), yt.double()
        g = self.limit_gram() if gram is None else self._check_gram(gram)
        coef = LinearCoefficients.initial(g, self.d_in, self.d_out)
        lr_u, lr_v = self.learning_rates(float(lr))
        losses = [float(mse(coef.forward(xt), yt))]
        for step, idx in enumerate(batch_schedule(xt.shape[0], steps, bs, seed), start=1):
            coef.step(xt[idx], yt[idx], lr_u, lr_v)
            losses.append(float(mse(coef.forward(xt), yt)))
            if diverged(losses[-1], losses[0], self.divergence_factor):
                raise self._divergence(xt, yt, float(lr), step, losses, bs)
        self.coef_, self.loss_curve_ = coef, torch.tensor(losses, dtype=torch.float64)
        return self

    def _check_gram(self, gram: Any) -> Tensor:
        m = self.d_in + self.d_out
        if not isinstance(gram, Tensor) or gram.shape != (m, m):
            raise ValueError(f"`gram` must be a ({m}, {m}) tensor (d_in + d_out initial vectors), "
                             f"got {type(gram).__name__} of shape {tuple(getattr(gram, 'shape', ()))}.")
        check_x(gram, m, "gram")          # finite, floating point
        return gram.double()

    def _divergence(self, x: Tensor, y: Tensor, lr: float, step: int, losses: list[float],
                    bs: Optional[int]) -> DivergenceError:
        from widelimit.predict import max_learning_rate
        n = x.shape[0] if bs is None else bs
        bound = max_learning_rate(self.initial_ntk(x[:n]), n * self.d_out)
        return DivergenceError(
            f"the infinite-width muP limit diverged at lr={lr:g}: the training loss went from "
            f"{losses[0]:.3g} to {losses[-1]:.3g} at step {step}. Lower `lr` (the kernel "
            f"regime's stability bound on this data is lr < {bound:.3g}; feature learning grows "
            "the effective kernel, so the limit can diverge below it).",
            lr=lr, step=step, losses=losses)

    def _fitted(self) -> LinearCoefficients:
        if not hasattr(self, "coef_"):
            raise RuntimeError("this MuPLimitLinear1LP is not fitted yet; call fit(x, y, lr, steps) first.")
        return self.coef_

    @property
    def weight_(self) -> Tensor:
        """The trained limit's effective linear map (d_in, d_out): ``f(x) = x @ weight_``."""
        return self._fitted().weight()

    def predict(self, x: Any) -> Any:
        """Outputs (N, d_out) of the trained infinite-width network, in x's dtype."""
        coef = self._fitted()
        xt, was_numpy = check_x(x, self.d_in)
        return to_output(coef.forward(xt.double()).to(xt.dtype), was_numpy)

    def feature_kernel(self, x1: Any, x2: Any = None) -> Any:
        """Learned feature kernel ``lim h(x1).h(x2)/n = x1 P^T Sigma P x2^T`` (N1, N2),
        with ``h = U x``; equal to ``s_u x1 x2^T`` before training."""
        coef = self._fitted()
        a, was_numpy = check_x(x1, self.d_in, "x1")
        b = a if x2 is None else check_x(x2, self.d_in, "x2")[0]
        fa, fb = a.double() @ coef.p.T, b.double() @ coef.p.T
        return to_output(((fa @ coef.gram) @ fb.T).to(a.dtype), was_numpy)
