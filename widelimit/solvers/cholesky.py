r"""Exact solve by a blocked, in-place Cholesky factorisation.

``A = L L^T`` is computed panel by panel (right-looking blocked Cholesky, Golub & Van Loan,
*Matrix Computations*, 4th ed., Alg. 4.2.10): for each diagonal block
:math:`L_{kk} = \mathrm{chol}(A_{kk})`, the panel below it
:math:`L_{ik} = A_{ik} L_{kk}^{-T}`, and the trailing update
:math:`A_{ij} \mathrel{-}= L_{ik} L_{jk}^T`.  The matrix is assembled block by block from a
:class:`KernelOperator` into one (N, N) buffer and overwritten by ``L``: one N x N array in
total, checked against ``max_memory`` before anything is allocated.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from widelimit._tensors import parse_bytes
from widelimit.solvers.cg import SolveResult
from widelimit.solvers.operator import block_rows

__all__ = ["blocked_cholesky_solve", "SolverMemoryError"]


class SolverMemoryError(MemoryError, ValueError):
    """A solver's working memory exceeds ``max_memory``; ``needed`` and ``budget`` in bytes."""

    def __init__(self, message: str, needed: int, budget: int):
        super().__init__(message)
        self.needed, self.budget = int(needed), int(budget)


def _dense(op: Any, block_size: Optional[int]) -> tuple[Tensor, int]:
    if isinstance(op, Tensor):
        if op.ndim != 2 or op.shape[0] != op.shape[1]:
            raise ValueError(f"`op` must be a square matrix, got shape {tuple(op.shape)}.")
        if not bool(torch.isfinite(op).all()):
            raise ValueError("`op` contains NaN or inf values.")
        return op.clone(), block_size or 2048
    if not hasattr(op, "to_dense"):
        raise TypeError(f"`op` must be a KernelOperator or a square tensor, got {type(op).__name__}.")
    if not getattr(op, "symmetric", True):
        raise ValueError("`op` must be square (a KernelOperator without centers).")
    a = op.to_dense()
    if not bool(torch.isfinite(a).all()):
        raise ValueError("The kernel contains NaN or inf values.")
    return a, block_size or op.block_size


def blocked_cholesky_solve(op: Any, b: Any, *, block_size: Optional[int] = None,
                           max_memory: Any = None) -> SolveResult:
    r"""Solve ``A x = b`` exactly by blocked Cholesky (``A`` SPD and small enough to store).

    Args:
        op: a square :class:`KernelOperator` (its ``diag_reg`` included) or an (N, N) tensor
            (copied, not modified).
        b: (N,) or (N, K) right-hand side(s).
        block_size: panel width (default: the operator's block size).
        max_memory: budget for the (N, N) working array (bytes or "4GB"); a
            :class:`SolverMemoryError` is raised before allocating when it does not fit.

    Returns:
        :class:`SolveResult` with ``iterations=0`` and the relative residual of the solve
        (computed with one more blocked product when ``op`` is an operator).

    Raises:
        ValueError: ``A`` is not positive definite (names the failing block), not finite,
            or shapes do not match.
    """
    n = op.shape[0]
    bt = torch.as_tensor(b)
    if bt.ndim not in (1, 2) or bt.shape[0] != n:
        raise ValueError(f"`b` must have shape ({n},) or ({n}, K), got {tuple(bt.shape)}.")
    if not bool(torch.isfinite(bt).all()):
        raise ValueError("`b` contains NaN or inf values.")
    if max_memory is not None:
        budget = parse_bytes(max_memory)
        itemsize = (op.dtype.itemsize if isinstance(op, Tensor) else
                    torch.empty((), dtype=op.dtype).element_size())
        needed = n * n * itemsize
        if needed > budget:
            raise SolverMemoryError(
                f"Cholesky of the {n}x{n} kernel needs {needed / 1e9:.2f} GB, over the budget "
                f"max_memory={budget / 1e9:.2f} GB; use solver='falkon' (Nystrom centers) or "
                f"solver='cg' (blocked products) instead.", needed, budget)
    a, bs = _dense(op, block_size)
    panels = block_rows(n, int(bs))
    for k, pk in enumerate(panels):
        lkk, info = torch.linalg.cholesky_ex(a[pk, pk])
        if int(info) != 0:
            raise ValueError(f"The matrix is not positive definite (Cholesky fails in diagonal "
                             f"block {k}, rows {pk.start}:{pk.stop}, leading minor {int(info)}); "
                             f"add a ridge (diag_reg) or check the kernel.")
        a[pk, pk] = lkk
        rest = slice(pk.stop, n)
        if pk.stop < n:
            # L_ik = A_ik L_kk^{-T}: a solve from the right with the upper factor L_kk^T
            a[rest, pk] = torch.linalg.solve_triangular(lkk.T, a[rest, pk], upper=True, left=False)
            panel = a[rest, pk]
            a[rest, rest] -= panel @ panel.T
    low = a.tril_()
    bb = bt.reshape(n, -1).to(low.dtype)
    y = torch.linalg.solve_triangular(low, bb, upper=False)
    x = torch.linalg.solve_triangular(low.T, y, upper=True)
    del a, low
    rel = _residual(op, x, bb)
    out = x.squeeze(-1) if bt.ndim == 1 else x
    return SolveResult(out, 0, rel, True, [rel])


def _residual(op: Any, x: Tensor, b: Tensor) -> float:
    ax = op @ x if isinstance(op, Tensor) else op.matvec(x)
    bn = torch.linalg.vector_norm(b, dim=0)
    bn = torch.where(bn > 0, bn, torch.ones_like(bn))
    return float((torch.linalg.vector_norm(b - ax, dim=0) / bn).max())
