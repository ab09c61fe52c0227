r"""Preconditioned conjugate gradient for symmetric positive-definite kernel systems.

Solves :math:`A x = b` for an SPD operator ``A`` given only through products ``A v``
(Hestenes & Stiefel, 1952; with a preconditioner :math:`P \approx A^{-1}`:
Saad, *Iterative Methods for Sparse Linear Systems*, 2003, Alg. 9.1).  Several right-hand
sides (columns of ``b``) are iterated together, each with its own step sizes.  The error
after k steps falls like :math:`2 ((\sqrt{\kappa} - 1) / (\sqrt{\kappa} + 1))^k` with
:math:`\kappa` the condition number of ``P A``: a good preconditioner (Nystrom, Falkon) cuts
the iterations.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import Tensor

from widelimit._tensors import check_positive

__all__ = ["SolveResult", "conjugate_gradient", "as_matvec"]


class SolveResult(NamedTuple):
    """Result of an iterative (or direct) solve.

    ``x``: the solution (shape of ``b``); ``iterations``: CG steps taken (0 for direct);
    ``residual``: final relative residual ``max_k ||b_k - A x_k|| / ||b_k||`` over the
    columns; ``converged``: ``residual <= tol``; ``residuals``: the relative residual after
    each step (``residuals[0]`` is the starting one, 1.0 from ``x0 = 0``).
    """
    x: Tensor
    iterations: int
    residual: float
    converged: bool
    residuals: list


def as_matvec(op: Any) -> Callable[[Tensor], Tensor]:
    """``v -> A v`` for a :class:`KernelOperator`-like object (``.matvec``), a square
    tensor, or a callable."""
    if hasattr(op, "matvec"):
        return op.matvec
    if isinstance(op, Tensor):
        if op.ndim != 2 or op.shape[0] != op.shape[1]:
            raise ValueError(f"`op` must be a square matrix, got shape {tuple(op.shape)}.")
        return lambda v: op @ v
    if callable(op):
        return op
    raise TypeError(f"`op` must be a KernelOperator, a square tensor or a callable v -> A v, "
                    f"got {type(op).__name__}.")


def _apply_precond(precond: Any) -> Optional[Callable[[Tensor], Tensor]]:
    if precond is None:
        return None
    if hasattr(precond, "apply"):
        return precond.apply
    if callable(precond):
        return precond
    raise TypeError(f"`precond` must be None, an object with .apply(r) or a callable r -> P r, "
                    f"got {type(precond).__name__}.")


def conjugate_gradient(op: Any, b: Any, *, precond: Any = None, tol: float = 1e-6,
                       maxiter: Optional[int] = None, x0: Optional[Tensor] = None,
                       callback: Optional[Callable[[int, float], None]] = None) -> SolveResult:
    r"""Solve ``A x = b`` (A SPD) by preconditioned conjugate gradient.

    Args:
        op: the operator ``A``: a :class:`KernelOperator` (blocked products), a square
            tensor or a callable ``v -> A v`` on (N, K) tensors.
        b: (N,) or (N, K) right-hand side(s).
        precond: ``P ~ A^{-1}``: an object with ``.apply(r)`` (e.g.
            :class:`NystromPreconditioner`) or a callable; None for plain CG.
        tol: stop when every column's relative residual ``||b - A x|| / ||b||`` is <= tol.
        maxiter: at most this many steps (default ``max(10 N, 100)`` capped at 10 000).
        x0: starting point (default zeros).
        callback: called as ``callback(iteration, relative_residual)`` after each step.

    Returns:
        :class:`SolveResult` with the residual history.

    Raises:
        ValueError: ``b`` not finite or of the wrong shape, or ``A`` found not positive
            definite (a search direction with ``p^T A p <= 0``), or NaN in a product.
    """
    matvec, pre = as_matvec(op), _apply_precond(precond)
    bt = torch.as_tensor(b)
    if bt.ndim not in (1, 2):
        raise ValueError(f"`b` must have shape (N,) or (N, K), got {tuple(bt.shape)}.")
    if not bool(torch.isfinite(bt).all()):
        raise ValueError("`b` contains NaN or inf values.")
    shape = getattr(op, "shape", None)
    if shape is not None and tuple(shape)[0] != bt.shape[0]:
        raise ValueError(f"`b` has {bt.shape[0]} rows but the operator is {shape[0]}x{shape[1]}.")
    check_positive(tol, "tol")
    n = bt.shape[0]
    if maxiter is None:
        maxiter = min(max(10 * n, 100), 10_000)
    if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 0:
        raise ValueError(f"`maxiter` must be a non-negative integer, got {maxiter!r}.")
    flat = bt.ndim == 1
    bb = bt.reshape(n, -1)
    dtype = bb.dtype if bb.is_floating_point() else torch.float64
    bb = bb.to(dtype)
    bnorm = torch.linalg.vector_norm(bb, dim=0)
    bnorm = torch.where(bnorm > 0, bnorm, torch.ones_like(bnorm))
    x = torch.zeros_like(bb) if x0 is None else torch.as_tensor(x0, dtype=dtype).reshape(n, -1).clone()
    r = bb - _mv(matvec, x, dtype) if x0 is not None else bb.clone()
    rel = float((torch.linalg.vector_norm(r, dim=0) / bnorm).max()) if n else 0.0
    history = [rel]
    z = pre(r) if pre is not None else r
    p = z.clone()
    rz = (r * z).sum(0)
    it = 0
    while rel > tol and it < maxiter:
        ap = _mv(matvec, p, dtype)
        pap = (p * ap).sum(0)
        live = rz != 0
        if bool((pap[live] <= 0).any()):
            raise ValueError(f"The operator is not positive definite (p^T A p = "
                             f"{float(pap[live].min()):.3e} <= 0 at iteration {it}); a kernel plus "
                             f"ridge must be SPD: check the kernel or increase the ridge.")
        alpha = torch.where(live, rz / torch.where(live, pap, torch.ones_like(pap)), torch.zeros_like(rz))
        x += alpha * p
        r -= alpha * ap
        it += 1
        rel = float((torch.linalg.vector_norm(r, dim=0) / bnorm).max())
        history.append(rel)
        if callback is not None:
            callback(it, rel)
        if rel <= tol:
            break
        z = pre(r) if pre is not None else r
        rz_new = (r * z).sum(0)
        beta = torch.where(live, rz_new / torch.where(live, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    out = x.squeeze(-1) if flat else x
    return SolveResult(out, it, rel, rel <= tol, history)


def _mv(matvec: Callable, v: Tensor, dtype: torch.dtype) -> Tensor:
    out = torch.as_tensor(matvec(v)).to(dtype).reshape(v.shape)
    if not bool(torch.isfinite(out).all()):
        raise ValueError("The operator returned NaN or inf (kernel values not finite?).")
    return out
