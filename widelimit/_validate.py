"""Validation at the public boundary: one place per concern, shared by every layer and function.

* numbers (hyperparameters, learning rates, times): :func:`check_real`, :func:`check_int`,
  :func:`check_choice`; the declarative :class:`Real` / :class:`Int` specs let a layer list
  its hyperparameters once (``Layer.hyperparameters``) and have the base class check every
  assignment of them (:meth:`widelimit.layers.base.Layer.__setattr__`);
* input arrays: :func:`check_tensor_input` (type, float dtype, dimensions, at least one
  feature, finiteness, and a magnitude whose Gram matrix overflows the dtype);
* kernel matrices given to the prediction functions: :func:`check_kernel_matrix` (shape,
  symmetry, a cheap positive semi-definiteness test);
* results: :func:`warn_if_not_finite` emits :class:`NonFiniteWarning` when a result has
  NaN / inf entries that no input check could foresee (e.g. ``Exp(b=50)`` overflowing).

Every error is a ValueError or TypeError whose message names the argument (in backticks)
and says what was expected.  Nothing here changes global state.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["NonFiniteWarning", "check_real", "check_int", "check_choice", "check_bool", "Real", "Int", "Choice",
           "check_tensor_input", "check_input_magnitude", "warn_if_not_finite", "warn_if_kernel_not_finite",
           "check_kernel_matrix", "check_get", "GRAM_HEADROOM", "FULL_CHECK_ENTRIES"]

#: inputs are refused when ``max|x|^2 * features`` exceeds the dtype's largest value over
#: this factor: the Gram matrix ``x x^T`` (and the kernels, a few multiples of it) would
#: overflow
GRAM_HEADROOM = 64.0


class NonFiniteWarning(RuntimeWarning):
    """A result of widelimit has NaN or inf entries although every input was finite
    (an overflow inside the computation, e.g. ``Exp(b=...)`` with a large ``b``)."""


def _where(owner: Optional[str]) -> str:
    return f"{owner}: " if owner else ""


def _bound_text(lo: Optional[float], hi: Optional[float], open_lo: bool, open_hi: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if open_lo else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if open_hi else '<='} {hi:g}")
    return " and ".join(parts)


def check_real(name: str, value: Any, *, finite: bool = True, min: Optional[float] = None,  # noqa: A002
               max: Optional[float] = None, open_min: bool = False, open_max: bool = False,  # noqa: A002
               tensor: bool = False, allow_none: bool = False, owner: Optional[str] = None) -> Any:
    """``value`` as a Python float after checking it is a real number in range.

    Accepts ints, floats, NumPy scalars and one-element tensors (``tensor=True`` returns
    a 0-d tensor unchanged, e.g. a ``W_std`` that requires grad).  Raises TypeError for
    anything else (bool, str, complex, a tensor with several entries) and ValueError for
    NaN / inf (with ``finite``) or a value outside ``[min, max]`` (open ends with
    ``open_min`` / ``open_max``).
    """
    where = _where(owner)
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{where}`{name}` must be a real number, got None.")
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.ndim > 1:
            raise TypeError(f"{where}`{name}` must be a real number or a 0-d tensor, got a tensor "
                            f"of shape {tuple(value.shape)}.")
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{where}`{name}` must be real, got a {value.dtype} tensor.")
        v = float(value.detach())
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}`{name}` must be a real number, got {type(value).__name__} "
                        f"{value!r}.")
    else:
        v = float(value)
    if finite and not math.isfinite(v):
        raise ValueError(f"{where}`{name}` must be finite, got {v}.")
    if math.isnan(v):
        raise ValueError(f"{where}`{name}` must not be NaN.")
    bad_lo = min is not None and (v < min or (open_min and v == min))
    bad_hi = max is not None and (v > max or (open_max and v == max))
    if bad_lo or bad_hi:
        raise ValueError(f"{where}`{name}` must be {_bound_text(min, max, open_min, open_max)}, "
                         f"got {v:g}.")
    if tensor and isinstance(value, Tensor):
        return value if value.ndim == 0 else value.reshape(())
    return v


def check_int(name: str, value: Any, *, min: Optional[int] = None, max: Optional[int] = None,  # noqa: A002
              allow_none: bool = False, owner: Optional[str] = None) -> Any:
    """``value`` as a Python int (ints and NumPy integers; not bool, not float) in range."""
    where = _where(owner)
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}`{name}` must be an integer, got {type(value).__name__} {value!r}.")
    v = int(value)
    if (min is not None and v < min) or (max is not None and v > max):
        raise ValueError(f"{where}`{name}` must be an integer {_bound_text(min, max, False, False)}, "
                         f"got {v}.")
    return v


def check_bool(name: str, value: Any, owner: Optional[str] = None) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{_where(owner)}`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_choice(name: str, value: Any, choices: Sequence[str], owner: Optional[str] = None) -> str:
    """``value`` if it is one of the strings ``choices`` (case-sensitive)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{_where(owner)}`{name}` must be one of {tuple(choices)}, got {value!r}.")
    return value


class Real:
    """Declarative spec of a real hyperparameter (keyword arguments of :func:`check_real`)."""

    def __init__(self, **bounds: Any) -> None:
        self.bounds = bounds

    def __call__(self, name: str, value: Any, owner: Optional[str] = None) -> Any:
        return check_real(name, value, owner=owner, **self.bounds)


class Int:
    """Declarative spec of an integer hyperparameter (keyword arguments of :func:`check_int`)."""

    def __init__(self, **bounds: Any) -> None:
        self.bounds = bounds

    def __call__(self, name: str, value: Any, owner: Optional[str] = None) -> Any:
        return check_int(name, value, owner=owner, **self.bounds)


class Choice:
    """Declarative spec of a string option out of ``choices`` (:func:`check_choice`)."""

    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def __call__(self, name: str, value: Any, owner: Optional[str] = None) -> str:
        return check_choice(name, value, self.choices, owner)


def _max_abs(x: Tensor) -> float:
    """``max |x|`` in one reduction; NaN if any entry is NaN, inf if any is infinite."""
    if x.numel() == 0:
        return 0.0
    lo, hi = torch.aminmax(x.detach())       # ~6x faster than vector_norm(x, inf) on CPU
    return float(torch.maximum(-lo, hi))     # NaN propagates through aminmax and maximum


def check_input_magnitude(x: Tensor, name: str, *, hint: str = "") -> None:
    """ValueError if ``x`` has NaN / inf entries, or entries so large that its Gram matrix
    ``x x^T`` (a sum of ``features`` squares) overflows ``x``'s dtype."""
    m = _max_abs(x)
    if not math.isfinite(m):
        raise ValueError(f"`{name}` contains NaN or inf values{hint}.")
    features = max(1, math.prod(x.shape[1:]))
    limit = torch.finfo(x.dtype).max / GRAM_HEADROOM
    if m * m * features > limit:
        safe = math.sqrt(limit / features)
        raise ValueError(
            f"`{name}` has entries up to {m:.3g}: the Gram matrix of {features} features "
            f"(sums of squares up to {m * m * features:.3g}) overflows {x.dtype} (largest "
            f"{torch.finfo(x.dtype).max:.3g}, kept {GRAM_HEADROOM:g}x headroom for the layers); "
            f"keep |{name}| below about {safe:.3g}: rescale the inputs (e.g. divide by their "
            f"standard deviation){' or use float64' if x.dtype != torch.float64 else ''}.")


def check_tensor_input(x: Any, name: str, *, min_ndim: int = 2, check_finite: bool = True,
                       magnitude: bool = True) -> tuple[Tensor, bool]:
    """Return ``(tensor, was_numpy)`` for a float array-like input ``x``.

    TypeError for anything but a float tensor / ndarray; ValueError for fewer than
    ``min_ndim`` axes, no features (an axis of length 0 after the batch axis), and, with
    ``check_finite``, NaN / inf entries or (with ``magnitude``) entries whose Gram matrix
    overflows the dtype (:func:`check_input_magnitude`).
    """
    was_numpy = isinstance(x, np.ndarray)
    if was_numpy:
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"`{name}` must be a floating-point array, got dtype {x.dtype}; "
                            f"convert it with `{name}.astype(np.float64)`.")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {x.dtype}; "
                        f"convert it with `{name}.double()` or `{name}.float()`.")
    if x.ndim < min_ndim:
        raise ValueError(f"`{name}` must have at least {min_ndim} dimensions (batch, features...), "
                         f"got shape {tuple(x.shape)}.")
    if min_ndim >= 2 and math.prod(x.shape[1:]) == 0:
        raise ValueError(f"`{name}` has no features: shape {tuple(x.shape)} (every axis after the "
                         f"batch axis must be non-empty).")
    if check_finite:
        if magnitude:
            check_input_magnitude(x, name, hint=_MASK_HINT)
        elif not math.isfinite(_max_abs(x)):
            raise ValueError(f"`{name}` contains NaN or inf values.")
    return x, was_numpy


_MASK_HINT = " (to mark padding, pass `mask_constant=float('nan')` or a boolean `mask`)"


def warn_if_not_finite(results: Iterable[Any], what: str, hint: str = "", stacklevel: int = 3) -> None:
    """Emit :class:`NonFiniteWarning` if any tensor / ndarray in ``results`` has NaN or inf."""
    for r in results:
        if isinstance(r, Tensor) and r.is_floating_point():
            bad = not math.isfinite(_max_abs(r))
        elif isinstance(r, np.ndarray) and np.issubdtype(r.dtype, np.floating):
            bad = r.size > 0 and not np.isfinite(r).all()
        else:
            continue
        if bad:
            warnings.warn(f"{what} has NaN or inf entries although its inputs are finite: an "
                          f"overflow inside the computation{hint}.", NonFiniteWarning, stacklevel=stacklevel)
            return


#: kernels with at most this many entries are checked entry by entry after ``kernel_fn``
#: (about a millisecond); larger ones through their diagonals and edge rows (below)
FULL_CHECK_ENTRIES = 1 << 20


def _kernel_parts(ki: Any) -> list:
    """The tensors of a computed kernel state that :func:`warn_if_kernel_not_finite` reads:
    all of ``nngp`` / ``ntk`` when small; for large kernels their diagonals (x1 against
    itself), the variances ``cov1`` / ``cov2`` and the first and last rows and columns.
    Kernels are PSD, ``|K_ij| <= sqrt(K_ii K_jj)``, so an overflow shows on the diagonal
    first, and a function that is NaN somewhere is NaN on the variances too; a full pass
    over a large kernel would add ~10% to a fast fully connected ``kernel_fn``."""
    parts = []
    for t in (ki.nngp, ki.ntk):
        if t is None:
            continue
        if t.numel() <= FULL_CHECK_ENTRIES or t.ndim != 2:
            parts.append(t)
            continue
        if ki.x1_is_x2 and t.shape[0] == t.shape[1]:
            parts.append(t.diagonal())
        parts.extend([t[0], t[-1], t[:, 0], t[:, -1]])
    parts.extend(c for c in (ki.cov1, ki.cov2) if c is not None)
    return parts


def warn_if_kernel_not_finite(k: Any) -> None:
    """:func:`warn_if_not_finite` for a computed kernel state (or a list of them, for
    branching architectures), on behalf of ``Layer.kernel_fn``."""
    ks = k if isinstance(k, (list, tuple)) else [k]
    warn_if_not_finite([t for ki in ks for t in _kernel_parts(ki)], "kernel_fn",
                       " (a hyperparameter such as Exp's `b` or a Polynomial's degree makes the "
                       "kernel exceed the dtype's range: rescale the inputs or use float64)", stacklevel=4)


def check_kernel_matrix(k: Tensor, name: str, *, symmetric: bool = True, psd: bool = True) -> None:
    """ValueError unless ``k`` is a square (N, N) matrix, symmetric up to rounding
    (``|K - K^T| <= sqrt(eps) max|K|``) and passes a cheap positive semi-definiteness test:
    a non-negative diagonal and ``|K_ij| <= sqrt(K_ii K_jj)`` (every 2x2 principal minor
    >= 0), both up to the same tolerance.  O(N^2), no factorisation."""
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"`{name}` must be a square (N, N) kernel matrix, got shape {tuple(k.shape)}.")
    if k.numel() == 0:
        raise ValueError(f"`{name}` is empty: shape {tuple(k.shape)}.")
    kd = k.detach()
    scale = _max_abs(kd)
    tol = math.sqrt(torch.finfo(kd.dtype).eps) * scale
    diag = kd.diagonal()
    if psd and float(diag.min()) < -tol:
        raise ValueError(f"`{name}` is not positive semi-definite: its diagonal has a negative "
                         f"entry {float(diag.min()):.3g}; a kernel matrix needs K_ii >= 0.")
    root = diag.clamp(min=0).sqrt()
    asym = excess = 0.0
    n, b = kd.shape[0], _CHECK_TILE          # square tiles: no (N, N) temporaries, cache-friendly
    for i in range(0, n, b):
        for j in range(i, n, b):
            upper = kd[i:i + b, j:j + b]
            lower = kd[j:j + b, i:i + b].T
            if symmetric:
                asym = max(asym, _max_abs(upper - lower))
            if psd:
                bound = root[i:i + b, None] * root[None, j:j + b]
                excess = max(excess, float((upper.abs() - bound).max()))
                if not symmetric and j != i:         # symmetric: the lower tile is the upper's
                    excess = max(excess, float((lower.abs() - bound).max()))
    if asym > tol:
        raise ValueError(f"`{name}` must be symmetric: max |K - K^T| = {asym:.3g} exceeds the "
                         f"tolerance {tol:.3g} (symmetrize it with (K + K.T) / 2 if this is rounding).")
    if excess > tol:
        raise ValueError(f"`{name}` is not positive semi-definite: some |K_ij| exceeds "
                         f"sqrt(K_ii K_jj) by {excess:.3g} (a 2x2 principal minor is negative).")


#: tile size of the kernel-matrix checks
_CHECK_TILE = 256


def check_get(get: Any, allowed: Sequence[str]) -> Optional[tuple[str, ...]]:
    """``get`` (None, one name, or a non-empty tuple / list of names out of ``allowed``) as a
    tuple of names (None for None); ValueError / TypeError naming ``get`` otherwise."""
    if get is None:
        return None
    if isinstance(get, str):
        names: tuple = (get,)
    elif isinstance(get, (tuple, list)):
        names = tuple(get)
    else:
        raise TypeError(f"`get` must be one of {tuple(allowed)} or a tuple of them, got "
                        f"{type(get).__name__} {get!r}.")
    if not names:
        raise ValueError(f"`get` must name at least one of {tuple(allowed)}, got {get!r}.")
    for g in names:
        if g not in allowed:
            raise ValueError(f"`get` must be one of {tuple(allowed)} (or a tuple of them), got {g!r}.")
    return names
