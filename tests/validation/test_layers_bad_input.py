"""Bad hyperparameters of every public layer constructor are refused when the layer is
built, with a ValueError / TypeError naming the argument (issue 17); finite but extreme
ones give finite kernels or a NonFiniteWarning, never NaN silently."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from widelimit import layers as L
from tests.validation._strategies import (BAD_REAL, NOT_INT, NOT_REAL, assert_refused, finite_or_warned,
                                          negative, non_positive_int)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

REAL = BAD_REAL
POSITIVE = st.one_of(BAD_REAL, negative())
NON_NEGATIVE = st.one_of(BAD_REAL, negative(allow_zero=True))
COUNT = st.one_of(NOT_INT, non_positive_int())
DEGREE = st.one_of(NOT_INT, st.integers(max_value=-1, min_value=-10**6))

#: constructor -> (valid keyword arguments, {argument: strategy of bad values})
CASES = {
    "ABRelu": (L.ABRelu, {"a": 0.1, "b": 1.0}, {"a": REAL, "b": REAL}),
    "LeakyRelu": (L.LeakyRelu, {"alpha": 0.1}, {"alpha": REAL}),
    "Erf": (L.Erf, {}, {"a": REAL, "b": REAL, "c": REAL}),
    "Sin": (L.Sin, {}, {"a": REAL, "b": REAL, "c": REAL}),
    "Rbf": (L.Rbf, {}, {"gamma": POSITIVE}),
    "Exp": (L.Exp, {}, {"a": REAL, "b": REAL}),
    "Gaussian": (L.Gaussian, {}, {"a": REAL, "b": REAL}),
    "ExpNormalized": (L.ExpNormalized, {}, {"gamma": POSITIVE, "shift": REAL}),
    "Polynomial": (L.Polynomial, {"coef": [0.0, 1.0]},
                   {"coef": st.one_of(st.sampled_from([[], "12", 3.0, None]),
                                      BAD_REAL.map(lambda v: [1.0, v]))}),
    "Monomial": (L.Monomial, {"degree": 2}, {"degree": DEGREE}),
    "RectifiedMonomial": (L.RectifiedMonomial, {"degree": 2}, {"degree": DEGREE}),
    "Hermite": (L.Hermite, {"degree": 2}, {"degree": DEGREE}),
    "Elementwise": (L.Elementwise, {"fn": torch.tanh},
                    {"n_radial": COUNT, "n_angular": COUNT,
                     "fn": st.sampled_from([None, 3, lambda x: torch.tensor(1.0), lambda x: x * float("nan"),
                                            lambda x: x[:2], lambda x: "a", lambda x: torch.log(x)]),
                     "deriv": st.sampled_from([3, "tanh"])}),
    "LayerNorm": (L.LayerNorm, {}, {"eps": NON_NEGATIVE, "axis": st.sampled_from([0, 2, "1", None])}),
    "Dropout": (L.Dropout, {"rate": 0.5},
                {"rate": st.one_of(POSITIVE, st.floats(min_value=1.0, exclude_min=True, allow_infinity=False)),
                 "mode": st.sampled_from(["eval", None, 1])}),
    "Dense": (L.Dense, {"out_dim": 4},
              {"out_dim": COUNT, "W_std": POSITIVE, "b_std": NON_NEGATIVE.filter(lambda v: v is not None),
               "parameterization": st.sampled_from(["mup", "", None]),
               "channel_axis": st.sampled_from([0, 1.5, None])}),
    "Conv": (L.Conv, {"out_chan": 2, "filter_shape": (2, 2)},
             {"out_chan": COUNT, "W_std": POSITIVE, "filter_shape": st.sampled_from([(), (0, 2), (1, 2, 3, 4), "ab", (1.5,)]),
              "strides": st.sampled_from([(0, 1), (1,), (1.5, 1)]), "padding": st.sampled_from(["same-ish", None, 3])}),
    "AvgPool": (L.AvgPool, {"window_shape": (2,)},
                {"window_shape": st.sampled_from([(0,), (), "2", (1.5,)]), "padding": st.sampled_from(["x", None])}),
    "GlobalSelfAttention": (L.GlobalSelfAttention, {"n_chan_out": 2, "n_chan_key": 2, "n_chan_val": 2, "n_heads": 1},
                            {"n_chan_out": COUNT, "n_heads": COUNT, "W_key_std": POSITIVE, "W_out_std": POSITIVE,
                             "attention_mechanism": st.sampled_from(["relu6", None])}),
    "ImageResize": (L.ImageResize, {"shape": (-1, -1, 3, 3), "method": "linear"},
                    {"method": st.sampled_from(["foo", None, 3, ""]),
                     "shape": st.sampled_from([(3, 3), (-1, -1, 0, 3), (2, -1, 3, 3), "abc"])}),
    "FanOut": (L.FanOut, {"num": 2}, {"num": COUNT}),
    "FanInConcat": (L.FanInConcat, {}, {"axis": st.sampled_from([0, 2, "1"])}),
}


@FAST
@given(data=st.data())
@pytest.mark.parametrize("layer", sorted(CASES))
def test_bad_hyperparameter_is_refused_naming_it(layer, data):
    cls, ok, bad = CASES[layer]
    cls(**ok)                                   # the valid arguments are accepted
    name = data.draw(st.sampled_from(sorted(bad)), label="argument")
    value = data.draw(bad[name], label="value")
    assert_refused(lambda: cls(**{**ok, name: value}), name)


def test_copy_is_checked_like_the_constructor():
    with pytest.raises(ValueError, match="`alpha`|`a`"):
        L.LeakyRelu(0.1).copy(a=float("nan"))
    with pytest.raises(ValueError, match="`width`"):
        L.serial(L.Dense(4), L.Relu(), L.Dense(1)).with_width(0)


X = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
EXTREME = st.floats(min_value=-60.0, max_value=60.0, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["Exp", "Gaussian", "Erf", "Sin", "Polynomial", "LeakyRelu"]),
       a=EXTREME, b=EXTREME, scale=st.sampled_from([1e-3, 1.0, 1e3, 1e8]))
def test_extreme_finite_hyperparameters_never_give_nan_silently(kind, a, b, scale):
    layer = {"Exp": lambda: L.Exp(a, b), "Gaussian": lambda: L.Gaussian(a, b), "Erf": lambda: L.Erf(a, b),
             "Sin": lambda: L.Sin(a, b), "Polynomial": lambda: L.Polynomial([a, b, a * b] * 4),
             "LeakyRelu": lambda: L.LeakyRelu(a)}[kind]()
    net = L.serial(L.Dense(8, W_std=abs(b) + 0.1), layer, L.Dense(1))
    finite_or_warned(lambda: net.kernel_fn(X * scale, get=("nngp", "ntk")))


@settings(max_examples=30, deadline=None)
@given(exponent=st.integers(min_value=0, max_value=300),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_huge_inputs_are_refused_or_finite(exponent, dtype):
    if dtype == torch.float32 and exponent > 38:
        exponent = 38
    x = (X * 10.0 ** exponent).to(dtype)
    out = finite_or_warned(lambda: L.serial(L.Dense(8), L.Relu(), L.Dense(1)).kernel_fn(x, get="ntk"))
    if exponent <= 15:
        assert out is not None                 # ordinary magnitudes are computed


@pytest.mark.parametrize("bad, name", [
    (lambda: L.serial(L.Dense(2), L.Dense(1)).module(input_shape=(3,))(torch.randn(2, 4)), "input_shape"),
    (lambda: L.serial(L.Dense(2)).module(input_shape=(0,)), "input_shape"),
    (lambda: L.serial(L.Dense(1)).module()(torch.randn(2, 0)), "feature"),
    (lambda: L.serial(L.Conv(2, (1,)), L.Index((slice(None), slice(None), 7))).kernel_fn(
        torch.randn(2, 1, 3), get="nngp"), "idx"),
    (lambda: L.serial(L.Conv(2, (1,)), L.Index((slice(None), slice(None), 7))).module()(torch.randn(2, 1, 3)), "idx"),
    (lambda: L.serial(L.ConvTranspose(2, (2,)), L.Relu()).kernel_fn(
        torch.randn(2, 1, 4), get="nngp", mask=torch.tensor([[True, False, False, False]] * 2)), "mask"),
    (lambda: L.serial(L.ConvTranspose(2, (2,)), L.Relu()).module((1, 4))(
        torch.randn(2, 1, 4), mask=torch.tensor([[True, False, False, False]] * 2)), "mask"),
    (lambda: L.serial(L.Conv(2, (2,)), L.Relu(), L.GlobalAvgPool()).kernel_fn(
        torch.randn(2, 1, 4), get="nngp", mask=torch.zeros(2, 4, dtype=torch.bool), spatial_blocking=True), "mask"),
])
def test_shape_and_mask_misuse_is_refused(bad, name):
    assert_refused(bad, name)


def test_an_overflowing_kernel_warns_with_nonfinitewarning():
    import warnings

    import widelimit as wl
    net = L.serial(L.Dense(8, W_std=3.0), L.Gaussian(a=1.0, b=1.0), L.Dense(1))   # E[exp(2 u^2)] diverges
    with pytest.warns(wl.NonFiniteWarning, match="kernel_fn"):
        k = net.kernel_fn(X * 100, get="nngp")
    assert not torch.isfinite(k).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", wl.NonFiniteWarning)     # finite results never warn
        assert torch.isfinite(L.serial(L.Dense(8), L.Erf(), L.Dense(1)).kernel_fn(X, get="ntk")).all()


def test_hyperparameter_checks_keep_differentiable_tensors():
    W = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    layer = L.Dense(4, W_std=W)
    assert layer.W_std is W                                   # the same tensor: gradients reach it
    L.serial(layer, L.Relu(), L.Dense(1, W_std=W)).kernel_fn(X, get="nngp").trace().backward()
    assert W.grad is not None and torch.isfinite(W.grad)
    assert L.Erf(a=torch.tensor(2.0)).a == 2.0 and isinstance(L.Erf(a=2).a, float)


def test_large_kernels_are_checked_through_their_diagonals():
    import widelimit as wl
    from widelimit import _validate
    x = torch.randn(1100, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 100
    assert 1100 ** 2 > _validate.FULL_CHECK_ENTRIES
    net = L.serial(L.Dense(8, W_std=3.0), L.Gaussian(a=1.0, b=1.0), L.Dense(1))
    with pytest.warns(wl.NonFiniteWarning):
        net.kernel_fn(x, get="nngp")
    with pytest.warns(wl.NonFiniteWarning):
        net.kernel_fn(x, x[:1000], get="nngp")
