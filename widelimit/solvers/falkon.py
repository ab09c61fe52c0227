r"""Falkon: Nystrom kernel ridge regression by preconditioned conjugate gradient.

With M centers :math:`\tilde x_1..\tilde x_M` (a uniform sample of the N training points)
the Nystrom KRR estimator :math:`f(x) = \sum_j \alpha_j k(x, \tilde x_j)` minimises
:math:`\|K_{nM}\alpha - y\|^2 + \text{ridge}\,\alpha^T K_{MM}\alpha`, i.e. solves

.. math::
    H \alpha = K_{nM}^T y, \qquad H = K_{nM}^T K_{nM} + \text{ridge}\, K_{MM}.

(``ridge`` is the absolute ridge of exact KRR :math:`(K + \text{ridge}\,I)\alpha = y`,
which this equals when all N points are centers; in the papers' normalisation
:math:`\lambda = \text{ridge} / n`.)  Falkon (Rudi, Carratino & Rosasco, "FALKON: An
Optimal Large Scale Kernel Method", NeurIPS 2017; Meanti, Carratino, Rosasco & Rudi,
"Kernel methods through the roof", NeurIPS 2020) approximates
:math:`K_{nM}^T K_{nM} \approx (n/M) K_{MM}^2`, which gives the preconditioner

.. math::
    H^{-1} \approx B B^T,\quad B = T^{-1} A^{-1},\quad K_{MM} = T^T T,\quad
    A^T A = \tfrac{n}{M} T T^T + \text{ridge}\, I,

two M x M Cholesky factors.  Conjugate gradient on :math:`H` with it needs
:math:`O(\log(1/\epsilon))` steps (exact in one step when every point is a center), each
one pass over the row blocks of :math:`K_{nM}` (recomputed, or cached when
``N M`` numbers fit in ``max_memory``).
"""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from widelimit._tensors import as_input, check_positive, parse_bytes
from widelimit.solvers.cg import SolveResult, conjugate_gradient
from widelimit.solvers.nystrom import choose_centers, jittered_cholesky, take
from widelimit.solvers.operator import KernelOperator, kernel_callable

__all__ = ["Falkon", "FalkonPreconditioner"]


class FalkonPreconditioner:
    """``B B^T ~ H^{-1}`` of the Falkon system (module docstring) from ``K_MM``."""

    def __init__(self, k_mm: Tensor, n: int, ridge: float):
        m = k_mm.shape[0]
        low, self.jitter = jittered_cholesky(0.5 * (k_mm + k_mm.T))
        self.t = low.T                                           # K_MM = T^T T, T upper
        inner = (n / m) * (self.t @ self.t.T)
        inner.diagonal().add_(ridge)
        self.a = jittered_cholesky(0.5 * (inner + inner.T), "n/M T T^T + ridge I")[0].T

    def apply(self, r: Tensor) -> Tensor:
        """``B B^T r = T^{-1} A^{-1} A^{-T} T^{-T} r``."""
        s = torch.linalg.solve_triangular(self.t.T, r, upper=False)
        s = torch.linalg.solve_triangular(self.a.T, s, upper=False)
        s = torch.linalg.solve_triangular(self.a, s, upper=True)
        return torch.linalg.solve_triangular(self.t, s, upper=True)


class _Columns:
    """A stored (N, N) kernel seen as its (N, M) center columns, sliced ``[rows, cols]``."""

    def __init__(self, store: Any, idx: np.ndarray):
        self.store, self.idx = store, idx
        self.shape = (store.shape[0], len(idx))
        self.ndim = 2

    def __getitem__(self, key: tuple) -> Tensor:
        rows, cols = key
        return take(self.store, np.arange(self.shape[0])[rows], self.idx[cols])


class Falkon:
    r"""Nystrom kernel ridge regression solved by Falkon's preconditioned CG.

    Args:
        kernel_fn: a widelimit layer or ``kernel_fn(x1, x2, get=...)``; may be None when
            ``store`` holds the (N, N) training kernel (``predict`` then needs ``kernel_fn``).
        n_centers: number of Nystrom centers M (<= N).
        ridge: absolute ridge (> 0), as in exact KRR ``(K + ridge I) alpha = y``.
        get: ``"ntk"`` or ``"nngp"``.
        tol: relative residual ``||b - H alpha|| / ||b||`` to stop at.
        maxiter: most CG steps (default 1000).
        block_size: rows of one block of ``K_nM``.
        max_memory: budget (bytes or "4GB") for caching ``K_nM`` between CG steps; when the
            (N, M) matrix does not fit it is recomputed every step. Default: cache if it
            takes at most a quarter of the memory available now.
        store: the stored (N, N) training kernel (zarr array, memmap, ``KernelStore``).
        seed: seed of the center sample (a private generator).

    After :meth:`fit`: ``centers_`` (M, ...), ``center_indices_``, ``alpha_`` (M, K) and
    ``solve_info_`` (a :class:`SolveResult`; its ``x`` is ``alpha_``).
    """

    def __init__(self, kernel_fn: Any, n_centers: int, ridge: float, *, get: str = "ntk",
                 tol: float = 1e-6, maxiter: Optional[int] = None, block_size: Optional[int] = None,
                 max_memory: Any = None, store: Any = None, seed: int = 0):
        check_positive(ridge, "ridge")
        check_positive(tol, "tol")
        self.kernel_fn = None if kernel_fn is None else kernel_callable(kernel_fn)
        self.n_centers, self.ridge, self.get, self.tol = n_centers, float(ridge), get, float(tol)
        self.maxiter = 1000 if maxiter is None else maxiter
        self.block_size, self.max_memory, self.store, self.seed = block_size, max_memory, store, seed
        self.seconds_: dict = {}

    def _cache_allowed(self, n: int, m: int, dtype: torch.dtype) -> bool:
        need = n * m * torch.empty((), dtype=dtype).element_size()
        if self.max_memory is None:
            from widelimit.scale.memory import available_memory
            return need <= available_memory() // 4
        return need <= parse_bytes(self.max_memory)

    def fit(self, x: Any, y: Any) -> "Falkon":
        """Choose centers, factor the preconditioner, run CG; returns self."""
        xt, _ = as_input(x, "x")
        yt = torch.as_tensor(y)
        if yt.ndim not in (1, 2) or yt.shape[0] != xt.shape[0]:
            raise ValueError(f"`y` must have shape ({xt.shape[0]},) or ({xt.shape[0]}, K) to match x, "
                             f"got {tuple(yt.shape)}.")
        if not bool(torch.isfinite(yt).all()):
            raise ValueError("`y` contains NaN or inf values.")
        n = xt.shape[0]
        t0 = time.perf_counter()
        idx = choose_centers(n, self.n_centers, self.seed)
        self.center_indices_ = idx
        self.centers_ = xt[torch.as_tensor(idx)]
        store = self.store
        if store is not None and hasattr(store, "names") and not hasattr(store, "ndim"):
            store = store[self.get]
        if store is not None:
            op = KernelOperator(None, xt, get=self.get, block_size=self.block_size,
                                store=_Columns(store, idx), centers=self.centers_, dtype=xt.dtype)
            k_mm = take(store, idx, idx).to(xt.dtype)
        else:
            op = KernelOperator(self.kernel_fn, xt, get=self.get, block_size=self.block_size,
                                centers=self.centers_)
            k_mm = KernelOperator(self.kernel_fn, self.centers_, get=self.get,
                                  block_size=self.block_size).to_dense()
        self.operator_ = op
        yy = yt.reshape(n, -1).to(dtype=xt.dtype, device=xt.device)
        cache: Optional[dict] = {} if self._cache_allowed(n, len(idx), xt.dtype) else None
        b = op.rmatvec(yy) if cache is None else _rmatvec_filling(op, yy, cache)
        t1 = time.perf_counter()
        pre = FalkonPreconditioner(k_mm, n, self.ridge)
        t2 = time.perf_counter()

        def h(v: Tensor) -> Tensor:
            return op.gram_matvec(v, cache) + self.ridge * (k_mm @ v)

        res = conjugate_gradient(h, b, precond=pre, tol=self.tol, maxiter=self.maxiter)
        if yt.ndim == 1:
            res = res._replace(x=res.x.squeeze(-1))
        self.alpha_ = res.x
        self.solve_info_ = res
        self.seconds_ = {"kernel_rhs": t1 - t0, "preconditioner": t2 - t1,
                         "cg": time.perf_counter() - t2}
        self.k_mm_ = k_mm
        return self

    def predict(self, x: Any, k_test_centers: Any = None) -> Tensor:
        """``K(x, centers) alpha`` in row blocks ((M,)/(M, K) outputs as for the targets)."""
        if not hasattr(self, "alpha_"):
            raise RuntimeError("Falkon is not fitted yet: call fit(x, y) first.")
        if k_test_centers is not None:
            return torch.as_tensor(k_test_centers).to(self.alpha_.dtype) @ self.alpha_
        if self.kernel_fn is None:
            raise ValueError("predict needs `kernel_fn` (or pass k_test_centers=K(x, centers)).")
        op = KernelOperator(self.kernel_fn, x, get=self.get, block_size=self.block_size,
                            centers=self.centers_)
        return op.matvec(self.alpha_)


def _rmatvec_filling(op: KernelOperator, y: Tensor, cache: dict) -> Tensor:
    """``K_nM^T y`` computing each row block once and keeping it in ``cache``."""
    from widelimit.solvers.operator import block_rows
    out = torch.zeros(op.shape[1], y.shape[1], dtype=op.dtype, device=op.device)
    for r in block_rows(op.shape[0], op.block_size):
        kb = op.block(r, slice(0, op.shape[1]))
        cache[r.start] = kb
        out += kb.T @ y[r]
    return out
