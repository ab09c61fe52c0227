"""Input conversion and validation shared by every public function.

NumPy arrays in give NumPy arrays out; torch tensors keep their dtype and device.
Errors name the offending argument and say what was expected.
"""
from __future__ import annotations

import functools
from collections import namedtuple
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from widelimit._validate import _MASK_HINT, check_input_magnitude, check_real, check_tensor_input

__all__ = ["as_input", "check_finite_input", "kernels_tuple", "to_output", "check_positive", "parse_bytes",
           "gram", "gram_rows", "scipy_blas", "syrk_upper", "upper_to_full"]


def as_input(x: Any, name: str, *, min_ndim: int = 2, check_finite: bool = True
             ) -> tuple[Tensor, bool]:
    """Return ``(tensor, was_numpy)`` for a float array-like input ``x``
    (:func:`widelimit._validate.check_tensor_input`).

    Raises TypeError for non-float data and ValueError for NaN/inf, too few dimensions
    (a batch axis and a feature axis are required), no features, or entries whose Gram
    matrix would overflow the dtype.
    """
    return check_tensor_input(x, name, min_ndim=min_ndim, check_finite=check_finite)


def all_finite(x: Tensor) -> bool:
    """Whether every entry is finite: one reduction (NaN and +-inf propagate into the sum);
    only a sum that overflows is checked entry by entry."""
    if x.numel() == 0 or bool(torch.isfinite(x.detach().sum())):
        return True
    return bool(torch.isfinite(x).all())


def check_finite_input(x: Tensor, name: str) -> None:
    check_input_magnitude(x, name, hint=_MASK_HINT)


@functools.lru_cache(maxsize=None)
def kernels_tuple(names: tuple) -> type:
    """The namedtuple class ``Kernels`` with fields ``names`` (made once per tuple of
    names: building a namedtuple class costs about 0.1 ms)."""
    return namedtuple("Kernels", names)


def to_output(x: Any, was_numpy: bool) -> Any:
    """Convert a result back to NumPy when the input was NumPy."""
    if not was_numpy or x is None:
        return x
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x)(*(to_output(v, True) for v in x))
    if isinstance(x, (tuple, list)):
        return type(x)(to_output(v, True) for v in x)
    return x


def check_positive(value: Any, name: str, *, allow_zero: bool = False,
                   allow_none: bool = False) -> None:
    """Raise unless ``value`` (a real number or one-element tensor) is finite and > 0
    (>= 0 with ``allow_zero``): :func:`widelimit._validate.check_real`."""
    check_real(name, value, min=0.0, open_min=not allow_zero, allow_none=allow_none)


_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: Any, name: str = "max_memory") -> int:
    """Parse a memory budget such as ``4e9``, ``"4GB"`` or ``"512MiB"`` into bytes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"`{name}` must be positive, got {value}.")
        return int(value)
    if isinstance(value, str):
        s = value.strip().lower().replace(" ", "")
        for unit in sorted(_UNITS, key=len, reverse=True):
            if s.endswith(unit):
                try:
                    n = float(s[: -len(unit)])
                except ValueError:
                    break
                if n <= 0:
                    break
                return int(n * _UNITS[unit])
    raise ValueError(f"`{name}` must be a positive number of bytes or a string like '4GB', got {value!r}.")


def gram(a: Tensor, b: Tensor, symmetric: bool = False) -> Tensor:
    """``a @ b.T``; with ``symmetric`` (``b`` equals ``a``) only the row blocks on and
    above the diagonal are multiplied and the rest is mirrored (BLAS has ``syrk``, torch
    does not): 2x2 blocks do 3/4 of the work, 4x4 blocks 5/8; the result is then exactly
    symmetric.  Short rows (fewer than 64 features, or fewer than 128 rows) take one GEMM,
    symmetric up to rounding: mirroring would cost more than the product itself."""
    n = a.shape[0]
    if not symmetric or n < 128 or a.shape[1] < 64:
        return a @ b.T
    t = 2 if n < 1024 else 4
    step = -(-n // t)
    rows = [slice(i, min(i + step, n)) for i in range(0, n, step)]
    out = a.new_empty((n, n))
    for i, ri in enumerate(rows):
        out[ri, ri] = upper_to_full(a[ri] @ a[ri].T)
        for rj in rows[i + 1:]:
            blk = a[ri] @ a[rj].T
            out[ri, rj] = blk
            out[rj, ri] = blk.T
    return out


def scipy_blas(t: Tensor, name: str):
    """SciPy's BLAS routine ``name`` (``"syrk"``, ``"trmm"``) for ``t``'s dtype, or None
    where it does not apply (not a CPU float32 / float64 tensor without gradient)."""
    if (t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64)
            or (torch.is_grad_enabled() and t.requires_grad)):
        return None
    from scipy.linalg import blas
    return getattr(blas, ("s" if t.dtype == torch.float32 else "d") + name)


def syrk_upper(a: Tensor, alpha: float = 1.0) -> Optional[Tensor]:
    """``alpha a @ a.T`` on and above the diagonal (below it: zeros) with BLAS ``syrk``, half the
    work of a GEMM; None where that does not apply (:func:`scipy_blas`, or fewer than 64 rows)."""
    syrk = None if a.shape[0] < 64 else scipy_blas(a, "syrk")
    if syrk is None:
        return None
    at = a.detach().T.numpy()      # (d, n), Fortran-ordered when ``a`` is C-ordered: no copy
    # trans=1: at.T @ at = a @ a.T; Fortran upper triangle = C-ordered lower, hence the .T
    return torch.from_numpy(syrk(alpha, at, trans=1, lower=1)).T


def gram_rows(x: Tensor) -> Tensor:
    """``x @ x.T``, exactly symmetric: BLAS ``syrk`` (half a GEMM) mirrored on CPU."""
    up = syrk_upper(x)
    if up is None:
        g = x @ x.T
        return 0.5 * (g + g.T)
    return upper_to_full(up)


def upper_to_full(g: Tensor) -> Tensor:
    """The (batch of) square matrices that agree with ``g`` on and above the diagonal and
    are symmetric."""
    return g.triu() + g.triu(1).mT
