r"""``KernelRidge``: NTK / NNGP kernel ridge regression for any N (scikit-learn estimator).

Fits :math:`f(x) = K(x, X)\alpha` with :math:`(K(X, X) + \text{ridge}\, I)\alpha = y`
(the converged infinite-width network, Lee et al. 2019, with ``ridge`` as noise), or its
Nystrom version on ``n_centers`` centers (:class:`Falkon`).  ``solver``:

* ``"direct"`` -- the dense kernel and one LAPACK Cholesky solve;
* ``"cholesky"`` -- :func:`blocked_cholesky_solve` (the N x N kernel assembled in place);
* ``"cg"`` -- :func:`conjugate_gradient` on blocked products (memory ``block_size**2``),
  Nystrom-preconditioned when ``n_centers`` is given;
* ``"falkon"`` -- :class:`Falkon` with ``n_centers`` centers (default ``10 sqrt(N)``);
* ``"auto"`` -- ``"direct"`` when the N x N kernel fits in ``max_memory``, else ``"falkon"``.
"""
from __future__ import annotations

import math
import time
from typing import Any, Optional

import numpy as np
import torch

from widelimit._tensors import as_input, check_positive, parse_bytes, to_output
from widelimit.estimators import BaseEstimator, RegressorMixin
from widelimit.solvers.cg import SolveResult, conjugate_gradient
from widelimit.solvers.cholesky import SolverMemoryError, blocked_cholesky_solve
from widelimit.solvers.falkon import Falkon
from widelimit.solvers.nystrom import NystromPreconditioner
from widelimit.solvers.operator import KernelOperator, kernel_callable

__all__ = ["KernelRidge"]

_SOLVERS = ("auto", "direct", "cholesky", "cg", "falkon")


class KernelRidge(RegressorMixin, BaseEstimator):
    r"""Kernel ridge regression with the NTK or NNGP of ``net``, for N beyond memory.

    Args:
        net_or_kernel_fn: a widelimit layer (its ``kernel_fn``) or a callable
            ``kernel_fn(x1, x2, get=...)``; None: :func:`widelimit.estimators.default_net`.
        kernel: ``"ntk"`` or ``"nngp"``.
        solver: ``"auto"``, ``"direct"``, ``"cholesky"``, ``"cg"`` or ``"falkon"`` (module
            docstring).
        n_centers: Nystrom centers for ``"falkon"`` (default ``min(N, 10 sqrt(N))``) and the
            preconditioner of ``"cg"`` (None: plain CG).
        ridge: absolute ridge (> 0) added to the kernel's diagonal.
        tol: relative residual at which CG / Falkon stop.
        maxiter: most CG steps.
        block_size: rows/columns of one kernel block.
        max_memory: memory budget (bytes or "4GB") deciding ``"auto"`` and Falkon's cache.
        seed: seed of the center sample.
        store: the training kernel already computed (a ``KernelStore`` from
            ``wl.compute_kernel``, a zarr array, a memmap: sliced ``store[rows, cols]``);
            blocks are read from it instead of recomputed (``predict`` still uses the
            kernel function for the test-train blocks).

    After ``fit``: ``alpha_`` (coefficients), ``X_fit_`` (the points they multiply: the
    training inputs, or the centers), ``solve_info_`` (dict: ``solver``, ``iterations``,
    ``residual``, ``residuals``, ``converged``, ``seconds``, ``n_centers``).
    """

    def __init__(self, net_or_kernel_fn: Any = None, kernel: str = "ntk", solver: str = "auto",
                 n_centers: Optional[int] = None, ridge: float = 1e-4, tol: float = 1e-6,
                 maxiter: Optional[int] = None, block_size: Optional[int] = None,
                 max_memory: Any = None, seed: int = 0, store: Any = None):
        self.net_or_kernel_fn = net_or_kernel_fn
        self.kernel = kernel
        self.solver = solver
        self.n_centers = n_centers
        self.ridge = ridge
        self.tol = tol
        self.maxiter = maxiter
        self.block_size = block_size
        self.max_memory = max_memory
        self.seed = seed
        self.store = store

    def _kernel_fn(self):
        if self.net_or_kernel_fn is None:
            from widelimit.estimators import default_net
            return kernel_callable(default_net())
        return kernel_callable(self.net_or_kernel_fn)

    def _choose(self, n: int, dtype: torch.dtype) -> str:
        if self.solver not in _SOLVERS:
            raise ValueError(f"`solver` must be one of {_SOLVERS}, got {self.solver!r}.")
        if self.solver != "auto":
            return self.solver
        from widelimit.scale.memory import available_memory
        budget = parse_bytes(self.max_memory) if self.max_memory is not None else available_memory() // 2
        # the dense kernel, its factor and the kernel function's temporaries: ~3 N^2
        return "direct" if 3 * n * n * torch.empty((), dtype=dtype).element_size() <= budget else "falkon"

    def fit(self, X: Any, y: Any) -> "KernelRidge":
        """Solve for the coefficients; returns self."""
        if self.kernel not in ("ntk", "nngp"):
            raise ValueError(f"`kernel` must be 'ntk' or 'nngp', got {self.kernel!r}.")
        check_positive(self.ridge, "ridge")
        check_positive(self.tol, "tol")
        xt, _ = as_input(X, "X")
        yt, _ = as_input(y, "y", min_ndim=1)
        if yt.ndim > 2 or yt.shape[0] != xt.shape[0]:
            raise ValueError(f"`y` must have shape ({xt.shape[0]},) or ({xt.shape[0]}, K) to match X, "
                             f"got {tuple(yt.shape)}.")
        n = xt.shape[0]
        yt = yt.to(dtype=xt.dtype, device=xt.device)
        kf = self._kernel_fn()
        solver = self._choose(n, xt.dtype)
        t0 = time.perf_counter()
        m = None
        if solver == "falkon":
            m = min(n, self.n_centers or max(1, int(10 * math.sqrt(n))))
            f = Falkon(kf, m, self.ridge, get=self.kernel, tol=self.tol, maxiter=self.maxiter,
                       block_size=self.block_size, max_memory=self.max_memory, seed=self.seed,
                       store=self.store).fit(xt, yt)
            res, self.X_fit_ = f.solve_info_, f.centers_
        else:
            op = KernelOperator(kf, xt, get=self.kernel, diag_reg=float(self.ridge),
                                block_size=self.block_size, store=self.store)
            self.X_fit_ = xt
            if solver == "cg":
                pre = None
                if self.n_centers:
                    m = min(n, int(self.n_centers))
                    pre = NystromPreconditioner(op, m, seed=self.seed)
                res = conjugate_gradient(op, yt, precond=pre, tol=self.tol, maxiter=self.maxiter)
            elif solver == "cholesky":
                res = blocked_cholesky_solve(op, yt, max_memory=self.max_memory)
            else:
                res = _direct(op, yt, self.max_memory)
        self.alpha_ = res.x
        self.solve_info_ = {"solver": solver, "iterations": res.iterations, "residual": res.residual,
                            "residuals": list(res.residuals), "converged": res.converged,
                            "seconds": time.perf_counter() - t0, "n_centers": m}
        self.n_features_in_ = int(np.prod(xt.shape[1:]))
        return self

    def predict(self, X: Any) -> Any:
        """``K(X, X_fit_) alpha_`` in blocks; numpy in, numpy out."""
        if not hasattr(self, "alpha_"):
            from sklearn.exceptions import NotFittedError
            raise NotFittedError("This KernelRidge instance is not fitted yet; call fit(X, y).")
        xs, was_numpy = as_input(X, "X")
        if xs.shape[1:] != self.X_fit_.shape[1:]:
            raise ValueError(f"`X` must have shape (M, {', '.join(map(str, self.X_fit_.shape[1:]))}), "
                             f"got {tuple(xs.shape)}.")
        op = KernelOperator(self._kernel_fn(), xs.to(self.X_fit_.dtype), get=self.kernel,
                            block_size=self.block_size, centers=self.X_fit_)
        return to_output(op.matvec(self.alpha_), was_numpy or not isinstance(X, torch.Tensor))


def _direct(op: KernelOperator, y: torch.Tensor, max_memory: Any) -> SolveResult:
    if max_memory is not None and op.nbytes() > parse_bytes(max_memory):
        raise SolverMemoryError(f"solver='direct' needs the {op.shape[0]}x{op.shape[0]} kernel "
                                f"({op.nbytes() / 1e9:.2f} GB) within max_memory; use solver='falkon' "
                                f"or 'cg'.", op.nbytes(), parse_bytes(max_memory))
    a = op.to_dense()
    if not bool(torch.isfinite(a).all()):
        raise ValueError("The kernel contains NaN or inf values.")
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise ValueError(f"The kernel plus ridge is not positive definite (leading minor "
                         f"{int(info)}); increase `ridge` or check the kernel.")
    x = torch.cholesky_solve(y.reshape(y.shape[0], -1), chol).reshape(y.shape)
    r = y.reshape(y.shape[0], -1) - a @ x.reshape(y.shape[0], -1)
    rel = float((torch.linalg.vector_norm(r, dim=0) / torch.linalg.vector_norm(y.reshape(y.shape[0], -1), dim=0)
                 .clamp_min(1e-300)).max())
    return SolveResult(x, 0, rel, True, [rel])
