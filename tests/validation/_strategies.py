"""Shared hypothesis strategies and assertions of the bad-input suite."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import strategies as st

from widelimit._validate import NonFiniteWarning

NAN, INF = float("nan"), float("inf")

#: values that are never a real number
NOT_REAL = st.sampled_from(["1", None, True, 1 + 1j, [1.0], (1.0,), object(), torch.tensor([1.0, 2.0]),
                            torch.tensor(1 + 1j), np.array([1.0, 2.0])])
#: real but never finite
NON_FINITE = st.sampled_from([NAN, INF, -INF, np.float64(NAN), torch.tensor(NAN)])
#: values that are never an integer
NOT_INT = st.sampled_from([1.5, 2.0, "3", None, True, NAN, 1 + 1j, [2], torch.tensor([1, 2])])

#: not a real number, or not finite
BAD_REAL = st.one_of(NOT_REAL, NON_FINITE)


def negative(allow_zero: bool = False):
    """Reals below 0 (and 0 itself unless ``allow_zero``)."""
    s = st.floats(max_value=-1e-300, min_value=-1e300, allow_nan=False)
    return s if allow_zero else st.one_of(s, st.just(0.0), st.just(-0.0))


def non_positive_int():
    return st.integers(min_value=-10**6, max_value=0)


def assert_refused(fn, name: str) -> None:
    """``fn()`` raises ValueError / TypeError (or the documented NotImplementedError of an
    unsupported combination) whose message names ``name``."""
    with pytest.raises((ValueError, TypeError, NotImplementedError)) as info:
        fn()
    assert name in str(info.value), f"message does not name {name!r}: {info.value}"


def finite_or_warned(fn):
    """Run ``fn``: it raises ValueError / TypeError, or returns finite values, or emits a
    :class:`NonFiniteWarning`.  Returns the result (None when refused)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn()
        except (ValueError, TypeError):
            return None
    warned = any(issubclass(w.category, NonFiniteWarning) for w in caught)
    for r in out if isinstance(out, tuple) else (out,):
        if isinstance(r, torch.Tensor):
            finite = bool(torch.isfinite(r).all())
        elif isinstance(r, np.ndarray):
            finite = bool(np.isfinite(r).all())
        elif isinstance(r, float):
            finite = math.isfinite(r)
        else:
            continue
        assert finite or warned, "a non-finite result without an error or a NonFiniteWarning"
    return out
