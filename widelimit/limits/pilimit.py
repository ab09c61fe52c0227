r"""Verified against finite pi-nets (:class:`widelimit.limits.PiNet`): ReLU and tanh, r = 4
and 8, depth <= 3, 10 SGD steps on 4-8 inputs, widths 256 ... 65536 (relative error ~
width^{-1/2}, ``tests/limits/test_pilimit.py``); on digits (r = 32, depth 2, 100 minibatch
steps, ``examples/pi_limit_digits.py``) the test outputs of widths 64 ... 8192 approach the
limit's with slope -0.49.  Experimental: the initialisation and the missing biases differ
from the paper (below), and nothing is checked against the paper's own numbers.

The pi-limit of a deep MLP: the exact infinite-width limit of projected muP SGD with
r-dimensional representations (after Yang, Santacroce & Hu, ICLR 2022, "Efficient
Computation of Deep Nonlinear Infinite-Width Neural Networks that Learn Features").

**The finite pi-net** (:class:`widelimit.limits.pinet.PiNet`), width n, rank r, ``depth`` = L
hidden layers, fixed projections ``Omega^l`` (n, r) of iid N(0, 1) entries:

.. math::
    h^1 = U x,\quad h^l = W^l \phi(h^{l-1}),\quad f = V \phi(h^L) / n,\qquad
    U_0 = \Omega^1 A_0,\ W^l_0 = \Omega^l B^l \Omega^{l-1\top} / n,\ V_0 = 0,

with ``A_0`` (r, d) and ``B^l`` (r, r) small random matrices shared with the limit
(``Omega^{l-1 +} = (Omega^T Omega)^{-1} Omega^T``, ~ ``Omega^T / n``).  SGD on
``L = ||f(X_b) - Y_b||^2 / (2 B K)`` with the muP scaling and every hidden-side gradient
*projected* onto the span of ``Omega^l`` by ``Pi^l = Omega^l Omega^{l +}``:

.. math::
    \Delta U = -\eta\, n\, \Pi^1 \nabla_U L,\quad
    \Delta W^l = -\eta\, \Pi^l \nabla_{W^l} L,\quad \Delta V = -\eta\, n \nabla_V L.

**The r-dimensional representation.** Every update is left-multiplied by ``Omega^l``, so
``h^l(x) = Omega^l c^l(x)`` exactly, at every width and step, with ``c^l in R^r``.  With
``delta^l = n dL/dh^l`` and ``p^l = Omega^{l T} delta^l / n`` (r-dimensional), the
weights after t steps are ``U = Omega^1 A``, ``W^l = W^l_0 + sum_s Omega^l q^l_s
phi(h^{l-1}_s)^T / n`` and ``V = sum_s a_s phi(h^L_s)^T``: SGD *appends* the step's
(projected) gradients to the weights, ``q^l_s = -eta p^l_s``, ``a_s = -eta g_s``
(``g_i = (f(x_i) - y_i)/(B K)``), ``A <- A - eta sum_i p^1_i x_i^T``.  Forward and
backward passes then involve the Omega's only through averages over the n rows
``omega`` of Omega; as n -> infinity these become Gaussian expectations over
``omega ~ N(0, I_r)`` (law of large numbers, O(n^{-1/2}) fluctuations), and the limit is
the recursion (:mod:`widelimit.limits.pi_expect` for ``K, k, J, M``):

.. math::
    c^1 = A x,\quad c^l = B^l k(c^{l-1}) + \textstyle\sum_s q^l_s K(c^{l-1}_s, c^{l-1}),\quad
    f = \textstyle\sum_s a_s K(c^L_s, c^L),

.. math::
    p^L_i = \textstyle\sum_s (a_s\cdot g_i) J(c^L_i, c^L_s),\quad
    p^{l-1}_i = M(c^{l-1}_i) B^{l\top} p^l_i + \textstyle\sum_s (q^l_s \cdot p^l_i)
    J(c^{l-1}_i, c^{l-1}_s).

The state is r-dimensional (plus the stored vectors, B per layer per step), so the limit
costs O((steps B)^2 r L) per step, independent of any width.

**First step in closed form.** ``V_0 = 0`` gives ``f_0 = 0`` and ``g_i = -y_i/(B K)``;
all ``p = 0`` (they carry V), so only the readout moves:
``f_1(x) = (eta / (B K)) sum_i y_i K(c^L_0(x_i), c^L_0(x))`` with ``c^L_0(x) =
B^L k(... B^2 k(A_0 x))`` (for ReLU ``k(c) = c/2``), one step of kernel regression with
the NNGP-like kernel of the random r-dim features.  From the second step on the hidden
layers move (feature learning).

**Backward pass = autograd of the limit.** Since ``dK(c_s, c)/dc = J(c, c_s)`` and
``dk(c)/dc = M(c)``, ``p^l_i = dL/dc^l_i`` of the limit forward pass above (stored vectors
fixed) and ``A`` moves by plain gradient descent: the tests check this to 1e-13.

**Relation to the paper.** As there: fixed Gaussian projections of rank r, the exact
projection ``Omega (Omega^T Omega)^{-1} Omega^T`` of every hidden-side gradient, weights
that are initial low-rank matrices plus appended gradient pairs, an MLP-like limit with
r-dimensional vectors, ReLU expectations in closed form.  Different here: ``V_0 = 0``;
the hidden initialisation ``W_0 = Omega^l B^l Omega^{l-1 +}`` (limit ``B^l k(c)``) instead
of the paper's r pairs ``Omega^l A^T phi(Omega^{l-1} B^T)^T / n`` (limit
``A^T K(B, c)``); no biases, layer multipliers, weight decay or gradient clipping.
These are what the tests verify.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from widelimit._tensors import check_positive, to_output
from widelimit.limits._common import (DivergenceError, batch_schedule, check_lr_steps, check_x,
                                      check_xy, diverged, mse)
from widelimit.limits.pi_expect import PiExpectations, quadrature_expectations, relu_expectations

__all__ = ["PiLimit", "pi_initial_matrices"]

Phi = Union[str, Callable[[Tensor], Tensor]]


def _check_int(v: Any, name: str, low: int = 1) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {v!r}.")
    return v


def _check_seed(v: Any, name: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"`{name}` must be a non-negative integer, got {v!r}.")
    return v


def pi_initial_matrices(d_in: int, rank: int, depth: int, seed: int = 0, input_var: float = 1.0,
                        hidden_var: float = 4.0) -> tuple[Tensor, list[Tensor]]:
    """``(A_0, [B^2, ..., B^L])``: the r-dimensional initial matrices shared by a
    :class:`PiNet` and its :class:`PiLimit` (float64, from a private generator):
    ``A_0`` (r, d) with entries N(0, input_var / d), ``B^l`` (r, r) with N(0, hidden_var / r)
    (4/r keeps ``|c^l|`` about constant through ReLU layers, ``k(c) = c/2``)."""
    gen = torch.Generator().manual_seed(int(seed))
    a0 = torch.randn(rank, d_in, generator=gen, dtype=torch.float64) * (input_var / d_in) ** 0.5
    bs = [torch.randn(rank, rank, generator=gen, dtype=torch.float64) * (hidden_var / rank) ** 0.5
          for _ in range(depth - 1)]
    return a0, bs


def resolve_phi(phi: Phi, quadrature_order: int = 40) -> PiExpectations:
    if isinstance(phi, str):
        if phi != "relu":
            raise ValueError(f"`phi` must be 'relu' or a callable torch function, got {phi!r}.")
        return relu_expectations()
    check_phi(phi)
    return quadrature_expectations(phi, quadrature_order)


def check_phi(phi: Phi) -> None:
    """A callable ``phi`` must map a float64 tensor to a tensor of the same shape."""
    if isinstance(phi, str):
        resolve_phi(phi)
        return
    if not callable(phi):
        raise TypeError(f"`phi` must be 'relu' or a callable torch function, got {phi!r}.")
    probe = torch.linspace(-2, 2, 5, dtype=torch.float64)
    try:
        out = phi(probe)
    except Exception as err:                       # noqa: BLE001 - re-raised with the argument
        raise TypeError(f"`phi` must be an elementwise torch function; phi(tensor) raised {err!r}.") from err
    if not isinstance(out, Tensor) or out.shape != probe.shape or not out.is_floating_point():
        raise TypeError("`phi` must be an elementwise torch function returning a float tensor of "
                        f"its input's shape; phi(tensor of shape (5,)) gave {type(out).__name__} "
                        f"{tuple(out.shape) if isinstance(out, Tensor) else ''}.")


def phi_function(phi: Phi) -> Callable[[Tensor], Tensor]:
    return torch.relu if isinstance(phi, str) else phi


class PiBase:
    """Argument checks, the SGD loop with divergence detection, ``predict``."""

    def __init__(self, d_in: int, d_out: int, *, depth: int = 2, rank: int = 8, phi: Phi = "relu",
                 seed: int = 0, input_var: float = 1.0, hidden_var: float = 4.0,
                 divergence_factor: float = 1e8) -> None:
        self.d_in, self.d_out = _check_int(d_in, "d_in"), _check_int(d_out, "d_out")
        self.depth, self.rank = _check_int(depth, "depth"), _check_int(rank, "rank")
        check_positive(input_var, "input_var")
        check_positive(hidden_var, "hidden_var")
        check_positive(divergence_factor, "divergence_factor")
        self.phi, self.seed = phi, _check_seed(seed, "seed")
        self.divergence_factor = float(divergence_factor)
        self.a0, self.b = pi_initial_matrices(d_in, rank, depth, seed, input_var, hidden_var)

    def _forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError

    def _step(self, xb: Tensor, yb: Tensor, lr: float) -> None:
        raise NotImplementedError

    def fit(self, x: Any, y: Any, lr: float, steps: int, batch_size: Optional[int] = None,
            seed: int = 0) -> "PiBase":
        """Train from the initialisation by (projected) SGD for ``steps`` steps on the
        batches of :func:`~widelimit.limits.batch_schedule` (full batch unless ``batch_size``);
        sets ``loss_curve_`` (float64 (steps + 1,): full training loss before each step and
        at the end).  Raises :class:`DivergenceError` (model left unfitted) when the loss
        is not finite or exceeds ``divergence_factor * max(initial loss, 1)``."""
        xt, yt, _ = check_xy(x, y, self.d_in, self.d_out)
        bs = check_lr_steps(lr, steps, batch_size, xt.shape[0])
        xt, yt = xt.double(), yt.double()
        self._reset()
        losses = [float(mse(self._forward(xt), yt))]
        for step, idx in enumerate(batch_schedule(xt.shape[0], steps, bs, seed), start=1):
            self._step(xt[idx], yt[idx], float(lr))
            losses.append(float(mse(self._forward(xt), yt)))
            if diverged(losses[-1], losses[0], self.divergence_factor):
                self._reset()
                self._fitted_ = False
                raise DivergenceError(
                    f"{type(self).__name__} diverged at lr={lr:g}: the training loss went from "
                    f"{losses[0]:.3g} to {losses[-1]:.3g} at step {step}; lower `lr`.",
                    lr=float(lr), step=step, losses=losses)
        self._fitted_ = True
        self.loss_curve_ = torch.tensor(losses, dtype=torch.float64)
        return self

    def predict(self, x: Any) -> Any:
        """Outputs (N, d_out) of the trained network, in x's dtype."""
        if not getattr(self, "_fitted_", False):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call "
                               "fit(x, y, lr, steps) first.")
        xt, was_numpy = check_x(x, self.d_in)
        return to_output(self._forward(xt.double()).to(xt.dtype), was_numpy)


class PiLimit(PiBase):
    r"""The infinite-width pi-limit of a deep MLP trained by projected muP SGD (after Yang,
    Santacroce & Hu, ICLR 2022): the width -> infinity limit of :class:`PiNet` with the same
    arguments, a recursion on r-dimensional representations (module docstring),

    .. math::
        c^1 = A x,\quad c^l = B^l k(c^{l-1}) + \textstyle\sum_s q^l_s K(c^{l-1}_s, c^{l-1}),
        \quad f(x) = \textstyle\sum_s a_s K(c^L_s, c^L(x)),

    with ``K(a, b) = E[phi(g.a) phi(g.b)]``, ``k(a) = E[g phi(g.a)]``, ``g ~ N(0, I_r)``;
    every SGD step on ``||f - y||^2 / (2 B K)`` appends the batch's ``(c_s, q_s)``,
    ``(c^L_s, a_s = -lr g_s)`` and moves ``A`` by gradient descent.  Cost per step
    O((steps B)^2 r L), independent of width.

    Args:
        d_in, d_out: input and output dimensions.
        depth: number of hidden layers L (>= 1).
        rank: r, the rank of the projections.
        phi: ``"relu"`` (closed forms) or an elementwise torch function (Gauss–Hermite
            quadrature of ``quadrature_order`` points per axis, ``phi'`` by autograd).
        seed: draws ``A_0``, ``B^l`` (:func:`pi_initial_matrices`); a PiNet with the same
            seed shares them.
        input_var, hidden_var: variances of ``A_0`` (times d) and ``B^l`` (times r).
        quadrature_order: Gauss–Hermite points per axis for a callable ``phi`` (>= 2).
        divergence_factor: see :meth:`fit`.

    Attributes (after ``fit``): ``A_`` (r, d); ``stored_`` (per hidden layer l >= 2, the
    stored ``(c^{l-1}_s, q^l_s)``), ``readout_`` (``(c^L_s, a_s)``), ``loss_curve_``.
    """

    def __init__(self, d_in: int, d_out: int, *, depth: int = 2, rank: int = 8, phi: Phi = "relu",
                 seed: int = 0, input_var: float = 1.0, hidden_var: float = 4.0,
                 quadrature_order: int = 40, divergence_factor: float = 1e8) -> None:
        super().__init__(d_in, d_out, depth=depth, rank=rank, phi=phi, seed=seed,
                         input_var=input_var, hidden_var=hidden_var,
                         divergence_factor=divergence_factor)
        self.expect = resolve_phi(phi, quadrature_order)
        self._reset()

    def _reset(self) -> None:
        r = self.rank
        self.A_ = self.a0.clone()
        self.stored_ = [(torch.zeros(0, r, dtype=torch.float64), torch.zeros(0, r, dtype=torch.float64))
                        for _ in self.b]
        self.readout_ = (torch.zeros(0, r, dtype=torch.float64),
                         torch.zeros(0, self.d_out, dtype=torch.float64))

    def representations(self, x: Tensor) -> list[Tensor]:
        """``[c^1, ..., c^L]`` (each (N, r)) of float64 inputs ``x`` (N, d)."""
        e = self.expect
        cs = [x @ self.A_.T]
        for b, (cst, q) in zip(self.b, self.stored_):
            c = e.mean_gphi(cs[-1]) @ b.T
            if cst.shape[0]:
                c = c + e.kernel(cs[-1], cst) @ q
            cs.append(c)
        return cs

    def _forward(self, x: Tensor) -> Tensor:
        c_l, a = self.readout_
        if c_l.shape[0] == 0:
            return torch.zeros(x.shape[0], self.d_out, dtype=torch.float64)
        return self.expect.kernel(self.representations(x)[-1], c_l) @ a

    def _step(self, xb: Tensor, yb: Tensor, lr: float) -> None:
        e = self.expect
        cs = self.representations(xb)
        c_l, a = self.readout_
        g = (self._forward(xb) - yb) / yb.numel()                                  # (B, K)
        p = e.jac_contract(cs[-1], c_l, g @ a.T) if c_l.shape[0] else torch.zeros_like(cs[-1])
        new_stored = []
        for l in range(len(self.b) - 1, -1, -1):                # hidden layer l + 2 (1-based)
            cst, q = self.stored_[l]
            new_stored.append((torch.cat([cst, cs[l]]), torch.cat([q, -lr * p])))
            p_prev = e.mean_dphi_gg(cs[l], p @ self.b[l])
            if cst.shape[0]:
                p_prev = p_prev + e.jac_contract(cs[l], cst, p @ q.T)
            p = p_prev
        self.A_ = self.A_ - lr * p.T @ xb
        self.stored_ = new_stored[::-1]
        self.readout_ = (torch.cat([c_l, cs[-1]]), torch.cat([a, -lr * g]))
