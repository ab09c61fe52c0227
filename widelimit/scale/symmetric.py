"""A symmetric kernel stored as its upper block triangle (``compute_kernel(mirror=False)``).

Only the blocks ``(i, j)`` with ``j >= i`` of the ``block_size`` grid are on disk (half the
bytes and half the writes of the full matrix); the chunks below the diagonal are never
written and read as NaN, so a reader that ignores the layout sees NaN, not a wrong
number.  :class:`UpperTriangleKernel` reads any selection of the full matrix: entry
``(p, q)`` comes from ``(p, q)`` when ``p``'s block is at most ``q``'s, else from ``(q, p)``.
It supports what the solvers and users slice with: ``K[rows, cols]`` (ints, slices, integer
arrays), ``K[rows]`` (whole rows), ``K.oindex[rows, cols]``, ``shape``, ``ndim``, ``dtype``,
and returns NumPy arrays.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["UpperTriangleKernel"]


def _index(key: Any, n: int, name: str) -> tuple[np.ndarray, bool]:
    """``(integer positions, whether the axis is dropped)`` for one axis of a selection."""
    if isinstance(key, slice):
        return np.arange(n)[key], False
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        k = int(key) + (n if key < 0 else 0)
        if not 0 <= k < n:
            raise IndexError(f"{name} index {key} is out of range for size {n}.")
        return np.array([k]), True
    idx = np.asarray(key)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError(f"a boolean {name} selection needs shape ({n},), got {idx.shape}.")
        return np.flatnonzero(idx), False
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise IndexError(f"{name} selection must be an int, a slice or a 1-D integer array, "
                         f"got {key!r}.")
    idx = np.where(idx < 0, idx + n, idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"{name} selection out of range for size {n}.")
    return idx.astype(np.int64), False


class UpperTriangleKernel:
    """The full (N, N) symmetric kernel of an upper-block-triangle zarr array ``arr``
    (chunks of ``block_size``)."""

    def __init__(self, arr: Any, block_size: int):
        self._arr = arr
        self.block_size = int(block_size)
        self.shape = tuple(int(s) for s in arr.shape)
        self.ndim = 2
        self.dtype = np.dtype(arr.dtype)
        self.oindex = _OIndex(self)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key, slice(None))
        if len(key) != 2:
            raise IndexError(f"a kernel has 2 axes, got a selection of {len(key)}.")
        return self._select(*key)

    def _select(self, rk: Any, ck: Any) -> np.ndarray:
        n = self.shape[0]
        r, drop_r = _index(rk, n, "row")
        c, drop_c = _index(ck, n, "column")
        out = np.empty((r.size, c.size), dtype=self.dtype)
        if r.size and c.size:
            lower = (r // self.block_size)[:, None] > (c // self.block_size)[None, :]
            upper_rows = ~lower.all(axis=1)           # rows with some entry stored as is
            if upper_rows.any():
                out[upper_rows] = self._read(r[upper_rows], c)
            lower_rows = np.flatnonzero(lower.any(axis=1))
            if lower_rows.size:
                # the mirrored entries: read (c, r) and transpose, for the rows and columns
                # that have some (a row with no stored entry has all its columns here)
                cols = np.flatnonzero(lower[lower_rows].any(axis=0))
                mirrored = self._read(c[cols], r[lower_rows]).T
                cell = np.ix_(lower_rows, cols)
                out[cell] = np.where(lower[cell], mirrored, out[cell])
        if drop_r and drop_c:
            return out[0, 0]
        return out[0] if drop_r else out[:, 0] if drop_c else out

    def _read(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``arr[rows][:, cols]``, reading contiguous runs as slices."""
        def as_key(idx):
            if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
                return slice(int(idx[0]), int(idx[0]) + idx.size)
            return idx
        rk, ck = as_key(rows), as_key(cols)
        if isinstance(rk, slice) and isinstance(ck, slice):
            return np.asarray(self._arr[rk, ck])
        return np.asarray(self._arr.oindex[rk, ck])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self[:, :]
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        return f"UpperTriangleKernel(shape={self.shape}, dtype={self.dtype}, block_size={self.block_size})"


class _OIndex:
    def __init__(self, owner: UpperTriangleKernel):
        self._owner = owner

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._owner[key]
