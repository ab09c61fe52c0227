"""The ``solver=`` argument of :mod:`widelimit.predict`: a name or a callable -> a solve."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["matrix_solver", "SOLVERS"]

#: names accepted by ``solver=`` in :func:`widelimit.predict.gradient_descent_mse` and
#: :func:`widelimit.predict.gp_inference`
SOLVERS = ("cholesky", "cg")


def matrix_solver(solver: Any, *, tol: float = 1e-10, maxiter: Any = None) -> Callable[[Tensor, Tensor], Tensor]:
    """``solve(A, b) -> x`` with ``A x = b`` for a regularised (N, N) kernel ``A``.

    Args:
        solver: ``"cholesky"`` (:func:`blocked_cholesky_solve`), ``"cg"``
            (:func:`conjugate_gradient` to relative residual ``tol``) or a callable
            ``solver(A, b)`` returning ``x`` or a :class:`SolveResult`.
        tol, maxiter: for ``"cg"``.

    The returned function records the last :class:`SolveResult` (or None for a plain
    callable) in its attribute ``info``.
    """
    from widelimit.solvers.cg import SolveResult, conjugate_gradient
    from widelimit.solvers.cholesky import blocked_cholesky_solve

    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(f"`solver` must be one of {SOLVERS} or a callable solver(A, b), "
                             f"got {solver!r}.")
        if solver == "cholesky":
            def run(a: Tensor, b: Tensor) -> Any:
                return blocked_cholesky_solve(a, b)
        else:
            def run(a: Tensor, b: Tensor) -> Any:
                res = conjugate_gradient(a, b, tol=tol, maxiter=maxiter)
                if not res.converged:
                    raise RuntimeError(f"CG did not reach relative residual {tol:g} in "
                                       f"{res.iterations} steps (residual {res.residual:.2e}).")
                return res
    elif callable(solver):
        run = solver
    else:
        raise TypeError(f"`solver` must be None, one of {SOLVERS} or a callable solver(A, b), "
                        f"got {type(solver).__name__}.")

    def solve(a: Tensor, b: Tensor) -> Tensor:
        out = run(a, b)
        solve.info = out if isinstance(out, SolveResult) else None  # type: ignore[attr-defined]
        x = out.x if isinstance(out, SolveResult) else out
        return torch.as_tensor(x).to(b.dtype).reshape(b.shape)

    solve.info = None  # type: ignore[attr-defined]
    return solve
