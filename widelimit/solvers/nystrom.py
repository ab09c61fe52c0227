r"""Nystrom approximation: centers, a jittered Cholesky of ``K_MM``, and a preconditioner.

With M centers (a uniform sample of the inputs) the Nystrom approximation of a kernel is
:math:`K \approx K_{nM} K_{MM}^{-1} K_{Mn} = U U^T`, :math:`U = K_{nM} T^{-1}`,
:math:`K_{MM} = T^T T` (Williams & Seeger, 2001).  :class:`NystromPreconditioner` applies
:math:`(U U^T + \lambda I)^{-1}` by the Woodbury identity

.. math::
    (U U^T + \lambda I)^{-1} r = \lambda^{-1}\bigl(r - U (\lambda I + U^T U)^{-1} U^T r\bigr),

an approximate inverse of :math:`K + \lambda I` for conjugate gradient (Frangella, Tropp &
Udell, "Randomized Nystrom Preconditioning", 2023): ``O(N M)`` memory and work per step.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from widelimit._tensors import check_positive

__all__ = ["NystromPreconditioner", "choose_centers", "jittered_cholesky", "take"]


def choose_centers(n: int, n_centers: Any, seed: int = 0) -> np.ndarray:
    """``n_centers`` distinct indices of ``range(n)``, uniformly at random (sorted), from a
    private generator seeded with ``seed`` (the global RNG is not touched)."""
    if isinstance(n_centers, bool) or not isinstance(n_centers, (int, np.integer)) or n_centers < 1:
        raise ValueError(f"`n_centers` must be a positive integer, got {n_centers!r}.")
    if n_centers > n:
        raise ValueError(f"`n_centers` must be at most the number of training points {n}, "
                         f"got {n_centers}.")
    if n_centers == n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=int(n_centers), replace=False))


def jittered_cholesky(a: Tensor, name: str = "K_MM") -> tuple[Tensor, float]:
    """Lower Cholesky factor of ``a + jitter I``; jitter 0, else growing from
    ``M eps mean(diag)`` until it succeeds (duplicated centers make ``a`` singular)."""
    if not bool(torch.isfinite(a).all()):
        raise ValueError(f"`{name}` contains NaN or inf values.")
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return chol, 0.0
    scale = float(torch.diagonal(a).mean())
    if not scale > 0:
        raise ValueError(f"`{name}` is not positive semi-definite (mean diagonal {scale:.3e}).")
    jitter = a.shape[0] * torch.finfo(a.dtype).eps * scale
    for _ in range(12):
        chol, info = torch.linalg.cholesky_ex(a + jitter * torch.eye(a.shape[0], dtype=a.dtype, device=a.device))
        if int(info) == 0:
            return chol, jitter
        jitter *= 10
    raise ValueError(f"`{name}` is not positive semi-definite (Cholesky fails even with jitter "
                     f"{jitter:.3e}); check the kernel.")


def take(store: Any, rows: np.ndarray, cols: np.ndarray) -> Tensor:
    """``store[rows][:, cols]`` for integer index arrays: zarr (``oindex``), numpy, tensors."""
    if hasattr(store, "oindex"):
        block = store.oindex[rows, cols]
    elif isinstance(store, Tensor):
        return store[torch.as_tensor(rows)][:, torch.as_tensor(cols)]
    else:
        block = np.asarray(store[rows])[:, cols]
    return torch.from_numpy(np.ascontiguousarray(block))


class NystromPreconditioner:
    r"""``P = (U U^T + ridge I)^{-1} \approx (K + ridge I)^{-1}`` from M Nystrom centers.

    Args:
        op: a square :class:`KernelOperator` (its ``diag_reg`` is the default ridge).
        n_centers: number of centers M (uniformly sampled rows); the (N, M) matrix ``U``
            is stored (``N M`` numbers).
        ridge: the ``lambda`` of ``K + lambda I`` (default ``op.diag_reg``; must be > 0).
        seed: seed of the center sample.

    ``apply(r)`` returns ``P r`` for (N,) or (N, K) ``r``; pass the object as ``precond``
    to :func:`conjugate_gradient`.
    """

    def __init__(self, op: Any, n_centers: int, *, ridge: Optional[float] = None, seed: int = 0):
        if not getattr(op, "symmetric", False):
            raise ValueError("`op` must be a square KernelOperator (no centers).")
        lam = op.diag_reg if ridge is None else ridge
        check_positive(lam, "ridge")
        n = op.shape[0]
        self.indices = choose_centers(n, n_centers, seed)
        self.ridge = float(lam)
        k_nm = op.columns(self.indices)                          # (N, M), in row blocks
        k_mm = k_nm[torch.as_tensor(self.indices)]
        low, self.jitter = jittered_cholesky(0.5 * (k_mm + k_mm.T))
        # U = K_nM T^{-1} with T = L^T: a solve from the right with the upper factor
        self.u = torch.linalg.solve_triangular(low.T, k_nm, upper=True, left=False)
        inner = self.u.T @ self.u
        inner.diagonal().add_(self.ridge)
        self._inner = torch.linalg.cholesky(inner)

    def apply(self, r: Tensor) -> Tensor:
        """``P r`` by the Woodbury identity (module docstring)."""
        flat = r.ndim == 1
        rr = r.reshape(r.shape[0], -1).to(self.u.dtype)
        w = torch.cholesky_solve(self.u.T @ rr, self._inner)
        out = (rr - self.u @ w) / self.ridge
        return out.squeeze(-1) if flat else out

    __call__ = apply
