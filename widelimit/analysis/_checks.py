"""Validation shared by ``widelimit.analysis``: kernel matrices, eigenvalue vectors, sizes."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from widelimit.predict._common import as_kernel

__all__ = ["as_square_kernel", "as_eigenvalues", "as_count", "as_float64"]


def as_square_kernel(k: Any, name: str = "kernel", *, symmetry_rtol: float = 1e-6
                     ) -> tuple[Tensor, bool]:
    """``(tensor, was_numpy)`` for a finite, square, symmetric (N, N) kernel matrix.

    Symmetric means ``max |K - K^T| <= symmetry_rtol * max |K|``.
    """
    t, was_numpy = as_kernel(k, name)
    if t.shape[0] != t.shape[1]:
        raise ValueError(f"`{name}` must be a square (N, N) kernel matrix, got shape {tuple(t.shape)}.")
    if t.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(t.shape)}); it needs at least one row.")
    td = t.detach()
    scale = float(td.abs().max())
    asym = float((td - td.T).abs().max())
    if asym > symmetry_rtol * max(scale, np.finfo(np.float64).tiny):
        raise ValueError(f"`{name}` is not symmetric: max |K - K^T| = {asym:.3g} exceeds "
                         f"{symmetry_rtol:g} * max |K| = {symmetry_rtol * scale:.3g}; a kernel matrix "
                         f"k(x, x) is symmetric (pass (K + K.T) / 2 to symmetrise a noisy one).")
    return t, was_numpy


def as_float64(x: Any, name: str, *, ndim: int | None = None) -> np.ndarray:
    """A finite float64 NumPy copy of a tensor / array / sequence."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be an array of numbers, got {type(x).__name__}.") from None
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"`{name}` must be {ndim}-D, got shape {a.shape}.")
    if not np.isfinite(a).all():
        raise ValueError(f"`{name}` contains NaN or inf values.")
    return a


def as_eigenvalues(x: Any, name: str = "eigenvalues") -> np.ndarray:
    """A non-empty 1-D float64 array of non-negative, finite eigenvalues."""
    a = as_float64(x, name, ndim=1)
    if a.size == 0:
        raise ValueError(f"`{name}` is empty; give at least one eigenvalue.")
    if (a < 0).any():
        raise ValueError(f"`{name}` must be non-negative (a kernel is positive semi-definite), "
                         f"got min {a.min():.3g}; clip round-off with `np.clip(e, 0, None)`.")
    return a


def as_count(n: Any, name: str, *, minimum: int = 1) -> int:
    """An integer >= ``minimum`` (bool refused)."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        if isinstance(n, Tensor) and n.ndim == 0 and not n.is_floating_point():
            n = int(n)
        else:
            raise TypeError(f"`{name}` must be an integer, got {type(n).__name__}.")
    if n < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {n}.")
    return int(n)
