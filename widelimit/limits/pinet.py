r"""The finite-width pi-net of Yang, Santacroce & Hu (ICLR 2022, "Efficient Computation of
Deep Nonlinear Infinite-Width Neural Networks that Learn Features"): an MLP of width n
trained by projected muP SGD (:mod:`widelimit.limits.pilimit` for the equations).  Its width ->
infinity limit is :class:`widelimit.limits.pilimit.PiLimit` with the same arguments.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from widelimit.limits._common import mse
from widelimit.limits.pilimit import Phi, PiBase, _check_int, _check_seed, check_phi, phi_function

__all__ = ["PiNet"]


class PiNet(PiBase, nn.Module):
    r"""A width-``width`` pi-net (float64): ``f(x) = V phi(W^L ... phi(U x)) / n`` with
    ``U_0 = Omega^1 A_0``, ``W^l_0 = Omega^l B^l Omega^{l-1 +}``, ``V_0 = 0`` and SGD
    steps ``U -= eta n Pi^1 grad_U``, ``W^l -= eta Pi^l grad_W``, ``V -= eta n grad_V``,
    where ``Omega^+ = (Omega^T Omega)^{-1} Omega^T`` and ``Pi^l = Omega^l Omega^{l +}`` is the
    orthogonal projection onto the span of ``Omega^l`` (as in the paper's pi-net).  With
    ``exact_projection=False``, ``Omega^+`` is replaced by its large-width value
    ``Omega^T / n``; both have the same limit (``Omega^T Omega / n -> I``), the exact one
    with up to ~2x smaller finite-width error.  See :mod:`widelimit.limits.pilimit`.

    **Factored weights** (default).  Every update of ``U`` and ``W^l`` is left-multiplied
    by ``Omega^l``, so ``U = Omega^1 A`` and ``W^l = Omega^l R^l`` with ``A`` (r, d) and
    ``R^l`` (r, n) at every step; the net stores ``A``, ``R^l`` (O(n r) memory and
    O(B n r) time per step instead of O(n^2)) and applies the same SGD step to them:
    ``A -= eta n G^1 grad_A``, ``R^l -= eta G^l grad_{R^l}`` with ``G = (Omega^T Omega)^{-1}``
    (``I / n`` without the exact projection), since ``grad_A = Omega^T grad_U``.  This is
    the same network in exact arithmetic; ``factored=False`` keeps the explicit (n, n)
    matrices (the tests check that both agree to rounding).

    Args:
        d_in, d_out, depth, rank, phi, seed, input_var, hidden_var, divergence_factor: as in
            :class:`PiLimit` (``seed`` draws the shared ``A_0``, ``B^l``).
        width: n (>= 1).
        width_seed: draws the projections ``Omega^l`` (n, r), iid N(0, 1), from a private
            generator (default: ``seed + 1``).
        exact_projection: use ``(Omega^T Omega)^{-1} Omega^T`` (default; needs width >= rank)
            or ``Omega^T / n``.
        factored: store ``U = Omega^1 A``, ``W^l = Omega^l R^l`` by their factors (default)
            or as explicit (n, d), (n, n) matrices.

    ``forward(x)`` is differentiable in the weights; ``fit`` / ``predict`` / ``loss_curve_``
    as in :class:`PiLimit`.
    """

    def __init__(self, d_in: int, d_out: int, width: int, *, depth: int = 2, rank: int = 8,
                 phi: Phi = "relu", seed: int = 0, width_seed: Optional[int] = None,
                 input_var: float = 1.0, hidden_var: float = 4.0,
                 divergence_factor: float = 1e8, exact_projection: bool = True,
                 factored: bool = True) -> None:
        nn.Module.__init__(self)
        self.exact_projection, self.factored = bool(exact_projection), bool(factored)
        PiBase.__init__(self, d_in, d_out, depth=depth, rank=rank, phi=phi, seed=seed,
                        input_var=input_var, hidden_var=hidden_var,
                        divergence_factor=divergence_factor)
        self.width = _check_int(width, "width")
        check_phi(phi)
        if width_seed is not None:
            _check_seed(width_seed, "width_seed")
        if exact_projection and width < rank:
            raise ValueError(f"`width` ({width}) must be >= `rank` ({rank}) for the exact "
                             "projection (Omega^T Omega must be invertible).")
        gen = torch.Generator().manual_seed(int(seed + 1 if width_seed is None else width_seed))
        omegas = [torch.randn(width, rank, generator=gen, dtype=torch.float64) for _ in range(depth)]
        for i, o in enumerate(omegas):
            self.register_buffer(f"omega{i + 1}", o)
            # left inverse: (O^T O)^{-1} O^T (exact), or O^T / n (its large-width limit)
            gram_inv = (torch.linalg.inv(o.T @ o) if exact_projection
                        else torch.eye(rank, dtype=torch.float64) / width)
            self.register_buffer(f"omega_pinv{i + 1}", gram_inv @ o.T)
            self.register_buffer(f"gram_inv{i + 1}", gram_inv)
        self.fn = phi_function(phi)
        rows = rank if self.factored else width        # U = Omega^1 A, W^l = Omega^l R^l
        self.U = nn.Parameter(torch.empty(rows, d_in, dtype=torch.float64))
        self.W = nn.ParameterList([nn.Parameter(torch.empty(rows, width, dtype=torch.float64))
                                   for _ in self.b])
        self.V = nn.Parameter(torch.empty(d_out, width, dtype=torch.float64))
        self._reset()

    def omegas(self) -> list[Tensor]:
        """The fixed projections ``[Omega^1, ..., Omega^L]`` (each (n, r))."""
        return [getattr(self, f"omega{i + 1}") for i in range(self.depth)]

    def pinvs(self) -> list[Tensor]:
        """The left inverses ``Omega^{l+}`` (each (r, n))."""
        return [getattr(self, f"omega_pinv{i + 1}") for i in range(self.depth)]

    def _reset(self) -> None:
        om, pi = self.omegas(), self.pinvs()
        left = (lambda l, m: m) if self.factored else (lambda l, m: om[l] @ m)  # noqa: E731
        with torch.no_grad():
            self.U.copy_(left(0, self.a0))
            for l, w in enumerate(self.W):
                w.copy_(left(l + 1, self.b[l] @ pi[l]))
            self.V.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """``f(x)`` (N, d_out) for float64 inputs (N, d_in)."""
        om = self.omegas()
        h = x @ self.U.T
        if self.factored:
            h = h @ om[0].T
        for l, w in enumerate(self.W):
            h = self.fn(h) @ w.T
            if self.factored:
                h = h @ om[l + 1].T
        return self.fn(h) @ self.V.T / self.width

    def _forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.forward(x)

    def _step(self, xb: Tensor, yb: Tensor, lr: float) -> None:
        params = [self.U, *self.W, self.V]
        grads = torch.autograd.grad(mse(self.forward(xb), yb), params)
        om, pi, n = self.omegas(), self.pinvs(), self.width
        with torch.no_grad():
            if self.factored:              # grad_A = Omega^T grad_U: Delta A = Omega^+ Delta U
                gi = [getattr(self, f"gram_inv{i + 1}") for i in range(self.depth)]
                self.U -= lr * n * gi[0] @ grads[0]
                for l, w in enumerate(self.W):
                    w -= lr * gi[l + 1] @ grads[1 + l]
            else:
                self.U -= lr * n * om[0] @ (pi[0] @ grads[0])
                for l, w in enumerate(self.W):
                    w -= lr * om[l + 1] @ (pi[l + 1] @ grads[1 + l])
            self.V -= lr * n * grads[-1]
