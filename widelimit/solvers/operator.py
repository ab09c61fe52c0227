r"""Kernel matrices as linear operators: blocked products ``K v`` that never hold ``K``.

A :class:`KernelOperator` stands for :math:`K(X, X) + \text{diag\_reg}\, I` (or the
rectangular :math:`K(X, C)` with centers ``C``).  Its product with a vector is computed in
``(block_size, block_size)`` blocks, each either recomputed on the fly by the kernel
function or read from a stored kernel (a :class:`widelimit.scale` ``KernelStore``, a zarr
array, a numpy memmap, a tensor: anything sliced as ``store[rows, cols]``).  Peak memory is
one block plus the vectors, whatever N is.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from widelimit._tensors import as_input, check_positive

__all__ = ["KernelOperator", "kernel_callable", "DEFAULT_BLOCK_SIZE"]

#: rows (and columns) of one kernel block when neither ``block_size`` nor a budget is given
DEFAULT_BLOCK_SIZE = 2048


def kernel_callable(net_or_kernel_fn: Any) -> Callable:
    """``net.kernel_fn`` for a widelimit layer, the callable itself otherwise."""
    fn = getattr(net_or_kernel_fn, "kernel_fn", net_or_kernel_fn)
    if not callable(fn):
        raise TypeError(f"`kernel_fn` must be a widelimit layer or a callable "
                        f"kernel_fn(x1, x2, get=...), got {type(net_or_kernel_fn).__name__}.")
    return fn


def _pick(k: Any, get: str) -> Tensor:
    v = k if isinstance(k, (Tensor, np.ndarray)) else getattr(k, get, None)
    if v is None:
        raise ValueError(f"`kernel_fn` did not return the '{get}' kernel.")
    return torch.as_tensor(v)


def block_rows(n: int, block_size: int) -> list[slice]:
    return [slice(i, min(i + block_size, n)) for i in range(0, n, block_size)]


class KernelOperator:
    r"""``K(x, x) + diag_reg * I`` (or ``K(x, centers)``) as a blocked linear operator.

    Args:
        kernel_fn: a widelimit layer or ``kernel_fn(x1, x2, get=...)`` returning a tensor or a
            namedtuple with field ``get``; may be None when ``store`` is given.
        x: (N, ...) inputs (rows of the operator).
        get: which kernel, ``"ntk"`` or ``"nngp"``.
        diag_reg: absolute ridge added to the diagonal (square operators only).
        block_size: rows/columns of one block (default :data:`DEFAULT_BLOCK_SIZE`); at most
            ``block_size**2`` kernel entries exist at any time.
        store: a stored (N, N) kernel sliced as ``store[rows, cols]`` (zarr array, numpy
            memmap, tensor), or a ``KernelStore`` (``store[get]`` is then used).
        centers: (M, ...) inputs of the columns: the operator is the (N, M) ``K(x, centers)``.
        dtype: dtype of the products (default: that of ``x``, or of the store).

    ``matvec(v)`` computes ``K v`` for ``v`` of shape (N_cols,) or (N_cols, K);
    ``rmatvec(u)`` computes ``K^T u``; ``gram_matvec(v)`` computes ``K^T K v`` in one pass
    over the row blocks (the Falkon normal equations); ``diag()`` the diagonal.
    A square operator without a store computes only blocks with ``j >= i`` and uses each
    for both ``K_ij v_j`` and ``K_ji v_i`` (the kernel is symmetric).
    """

    def __init__(self, kernel_fn: Any, x: Any, *, get: str = "ntk", diag_reg: float = 0.0,
                 block_size: Optional[int] = None, store: Any = None, centers: Any = None,
                 dtype: Optional[torch.dtype] = None):
        if get not in ("ntk", "nngp"):
            raise ValueError(f"`get` must be 'ntk' or 'nngp', got {get!r}.")
        if kernel_fn is None and store is None:
            raise ValueError("Pass `kernel_fn` (blocks recomputed on the fly) or `store` "
                             "(a stored kernel sliced as store[rows, cols]).")
        self.kernel_fn = None if kernel_fn is None else kernel_callable(kernel_fn)
        self.get = get
        self.x, _ = as_input(x, "x")
        self.centers = None
        if centers is not None:
            self.centers, _ = as_input(centers, "centers")
            if self.centers.shape[1:] != self.x.shape[1:]:
                raise ValueError(f"`centers` must have shape (M, {', '.join(map(str, self.x.shape[1:]))}) "
                                 f"like x, got {tuple(self.centers.shape)}.")
        check_positive(diag_reg, "diag_reg", allow_zero=True)
        self.diag_reg = float(diag_reg)
        if self.diag_reg and self.centers is not None:
            raise ValueError("`diag_reg` applies to square operators only (no `centers`).")
        if block_size is None:
            block_size = DEFAULT_BLOCK_SIZE
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise ValueError(f"`block_size` must be a positive integer, got {block_size!r}.")
        self.block_size = int(block_size)
        n = self.x.shape[0]
        m = n if self.centers is None else self.centers.shape[0]
        self.store = None
        if store is not None:
            if hasattr(store, "names") and not hasattr(store, "ndim"):
                store = store[get]          # a KernelStore: its array named like the kernel
            shape = tuple(getattr(store, "shape", ()))
            if shape != (n, m):
                raise ValueError(f"`store` must have shape ({n}, {m}) to match x, got {shape}.")
            self.store = store
        if dtype is None:
            dtype = self.x.dtype if store is None else torch.as_tensor(np.asarray(store[0:1, 0:1])).dtype
        self.dtype = dtype
        self.device = self.x.device
        self.shape = (n, m)
        self.blocks_computed = 0

    @property
    def symmetric(self) -> bool:
        return self.centers is None

    def block(self, rows: slice, cols: slice) -> Tensor:
        """The kernel block ``K[rows, cols]`` (without ``diag_reg``)."""
        self.blocks_computed += 1
        if self.store is not None:
            b = self.store[rows, cols]
            if isinstance(b, Tensor):
                return b.to(dtype=self.dtype, device=self.device)
            return torch.from_numpy(np.ascontiguousarray(np.asarray(b))).to(dtype=self.dtype, device=self.device)
        x2 = self.x if self.centers is None else self.centers
        assert self.kernel_fn is not None
        k = _pick(self.kernel_fn(self.x[rows], x2[cols], get=self.get), self.get)
        return k.to(dtype=self.dtype, device=self.device)

    def columns(self, idx: np.ndarray) -> Tensor:
        """The (N, len(idx)) columns ``K[:, idx]`` (no ``diag_reg``), in row blocks."""
        from widelimit.solvers.nystrom import take
        idx = np.asarray(idx)
        out = torch.empty(self.shape[0], len(idx), dtype=self.dtype, device=self.device)
        x2 = self.x if self.centers is None else self.centers
        for r in block_rows(self.shape[0], self.block_size):
            self.blocks_computed += 1
            if self.store is not None:
                kb = take(self.store, np.arange(r.start, r.stop), idx)
            else:
                assert self.kernel_fn is not None
                kb = _pick(self.kernel_fn(self.x[r], x2[torch.as_tensor(idx)], get=self.get), self.get)
            out[r] = kb.to(dtype=self.dtype, device=self.device)
        return out

    def _check(self, v: Any, n: int, name: str) -> tuple[Tensor, bool]:
        t = torch.as_tensor(v)
        if t.ndim not in (1, 2) or t.shape[0] != n:
            raise ValueError(f"`{name}` must have shape ({n},) or ({n}, K) for this "
                             f"{self.shape[0]}x{self.shape[1]} operator, got {tuple(t.shape)}.")
        flat = t.ndim == 1
        return (t.reshape(-1, 1) if flat else t).to(dtype=self.dtype, device=self.device), flat

    def _tiles(self) -> Iterator[tuple[slice, slice]]:
        rows, cols = block_rows(self.shape[0], self.block_size), block_rows(self.shape[1], self.block_size)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                if self.symmetric and j < i:
                    continue
                yield r, c

    def matvec(self, v: Any) -> Tensor:
        """``(K + diag_reg I) v``: v (N_cols,) or (N_cols, K)."""
        vv, flat = self._check(v, self.shape[1], "v")
        out = torch.zeros(self.shape[0], vv.shape[1], dtype=self.dtype, device=self.device)
        for r, c in self._tiles():
            kb = self.block(r, c)
            out[r] += kb @ vv[c]
            if self.symmetric and r != c:
                out[c] += kb.T @ vv[r]
        if self.diag_reg:
            out += self.diag_reg * vv
        return out.squeeze(-1) if flat else out

    __matmul__ = matvec

    def rmatvec(self, u: Any) -> Tensor:
        """``K^T u`` for u (N_rows,) or (N_rows, K)."""
        if self.symmetric:
            return self.matvec(u)
        uu, flat = self._check(u, self.shape[0], "u")
        out = torch.zeros(self.shape[1], uu.shape[1], dtype=self.dtype, device=self.device)
        for r, c in self._tiles():
            out[c] += self.block(r, c).T @ uu[r]
        return out.squeeze(-1) if flat else out

    def gram_matvec(self, v: Any, cache: Optional[dict] = None) -> Tensor:
        """``K^T K v`` in one pass over row blocks ((block_size, M) of K at a time).

        ``cache``: a dict filled with the row blocks on the first call and reused after
        (for callers that can afford the (N, M) matrix; pass None to recompute).
        """
        vv, flat = self._check(v, self.shape[1], "v")
        out = torch.zeros(self.shape[1], vv.shape[1], dtype=self.dtype, device=self.device)
        for r in block_rows(self.shape[0], self.block_size):
            kb = None if cache is None else cache.get(r.start)
            if kb is None:
                kb = self.block(r, slice(0, self.shape[1]))
                if cache is not None:
                    cache[r.start] = kb
            out += kb.T @ (kb @ vv)
        return out.squeeze(-1) if flat else out

    def diag(self) -> Tensor:
        """The diagonal of ``K + diag_reg I`` (square operators), one small block at a time."""
        if not self.symmetric:
            raise ValueError("diag() is defined for square operators (no `centers`).")
        out = torch.empty(self.shape[0], dtype=self.dtype, device=self.device)
        for r in block_rows(self.shape[0], self.block_size):
            out[r] = torch.diagonal(self.block(r, r))
        return out + self.diag_reg

    def to_dense(self) -> Tensor:
        """The whole matrix (only for operators that fit in memory)."""
        out = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        for r, c in self._tiles():
            kb = self.block(r, c)
            out[r, c] = kb
            if self.symmetric and r != c:
                out[c, r] = kb.T
        if self.diag_reg:
            out.diagonal().add_(self.diag_reg)
        return out

    def nbytes(self) -> int:
        """Bytes the dense matrix would take."""
        return int(math.prod(self.shape)) * torch.empty((), dtype=self.dtype, device=self.device).element_size()
