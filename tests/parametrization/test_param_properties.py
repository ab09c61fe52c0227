"""Property tests: the registry's factors follow the abc table for any widths."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widelimit.parametrization import get_scheme, infer_dims
from widelimit.parametrization.parametrize import _factors
from widelimit.parametrization.registry import classify
from torch import nn


@settings(max_examples=60, deadline=None)
@given(base=st.integers(1, 64), mult_in=st.integers(1, 32), mult_out=st.integers(1, 32),
       scheme=st.sampled_from(["sp", "ntk", "mup", "mf"]))
def test_hidden_factors_match_table(base: int, mult_in: int, mult_out: int, scheme: str) -> None:
    sch = get_scheme(scheme)
    lin = nn.Linear(1, 1)
    role, m_in, m_out = classify(lin, "weight", (base * mult_out, base * mult_in), (base, base),
                                 (mult_out > 1, mult_in > 1))
    init, mult, lr_sgd, lr_adam = _factors(sch, role, m_in, m_out, True, m_in)
    if role == "fixed":
        assert (init, mult, lr_sgd, lr_adam) == (1.0, 1.0, 1.0, 1.0)
        return
    row = sch.row(role)
    n = m_out if role == "input" else m_in
    assert mult == pytest.approx(n ** -row.a)
    assert lr_adam == pytest.approx(n ** -row.c_adam)
    if sch.rescale_init:
        assert init == pytest.approx(n ** -row.b * m_in ** 0.5)
    else:
        assert init == 1.0
    if scheme == "mup" and role == "hidden":
        assert lr_sgd == pytest.approx(m_out / m_in)  # TP V Table 8


@settings(max_examples=40, deadline=None)
@given(w0=st.integers(1, 16), k=st.integers(1, 8))
def test_infer_dims_marks_changed_dims(w0: int, k: int) -> None:
    base, model = nn.Linear(3, w0), nn.Linear(3, w0 * k)
    dims = infer_dims(model, base)
    assert dims["weight"][2] == (k > 1, False)
    assert dims["bias"][2] == (k > 1,)
