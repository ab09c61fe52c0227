"""Bad arguments of kernel_fn, the empirical kernels, the prediction functions and the
parametrization functions are refused with a ValueError / TypeError naming the argument;
valid but extreme ones give finite results or a documented warning (issue 17)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import widelimit as wl
from widelimit import layers as L
from tests.validation._strategies import (BAD_REAL, INF, NAN, NOT_INT, assert_refused, finite_or_warned,
                                          negative, non_positive_int)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
G = torch.Generator().manual_seed(0)
X = torch.randn(5, 3, dtype=torch.float64, generator=G)
Y = torch.randn(5, 1, dtype=torch.float64, generator=G)
NET = L.serial(L.Dense(8), L.Relu(), L.Dense(1))
K = NET.kernel_fn(X, get="ntk")


def _with(x, i, v):
    x = x.clone()
    x.view(-1)[i] = v
    return x


BAD_X = st.one_of(
    st.sampled_from([X.long(), X[:, 0], X[:, :0], X.tolist(), "x", None, X.to(torch.complex128)]),
    st.builds(_with, st.just(X), st.integers(0, X.numel() - 1), st.sampled_from([NAN, INF, -INF])),
    st.floats(min_value=1e160, max_value=1e300).map(lambda s: X * s),
    st.floats(min_value=1e19, max_value=1e30).map(lambda s: (X * s).float()),
)
BAD_GET = st.sampled_from([5, "cntk", (), ("nngp", 3), {"nngp"}, b"ntk", 1.0])


@FAST
@given(x=BAD_X)
def test_kernel_fn_refuses_bad_inputs(x):
    assert_refused(lambda: NET.kernel_fn(x, get="nngp"), "x1")
    if x is not None:
        assert_refused(lambda: NET.kernel_fn(X, x, get="nngp"), "x2")


@FAST
@given(get=BAD_GET)
def test_every_get_argument_is_checked(get):
    assert_refused(lambda: NET.kernel_fn(X, get=get), "get")
    assert_refused(lambda: wl.empirical_kernel_fn(NET.module((3,), seed=0))(X, get=get), "get")
    assert_refused(lambda: wl.predict.gp_inference(K, Y)(get, K[:2], K[:2, :2]), "get")


@FAST
@given(option=st.sampled_from([-1, 0, 1.5, "yes", NAN]))
def test_kernel_fn_spatial_blocking_checked(option):
    img = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    cnn = L.serial(L.Conv(2, (2, 2)), L.Relu(), L.GlobalAvgPool())
    assert_refused(lambda: cnn.kernel_fn(img, get="nngp", spatial_blocking=option), "spatial_blocking")


MODEL = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)).double()


@FAST
@given(x=BAD_X.filter(lambda v: not (isinstance(v, torch.Tensor) and v.dtype == torch.long)),
       which=st.sampled_from(["ntk", "nngp"]))
def test_empirical_kernels_refuse_bad_inputs(x, which):
    fn = wl.empirical_ntk if which == "ntk" else wl.empirical_nngp
    out = finite_or_warned(lambda: fn(MODEL, x))
    if isinstance(x, torch.Tensor) and x.ndim == 2 and x.shape[1] == 3 and x.is_floating_point() \
            and not torch.isfinite(x).all():
        assert out is None                     # NaN / inf inputs are refused, never computed


def test_empirical_ntk_explains_in_place_buffer_updates():
    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 1)
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, x):
            self.calls.add_(1)
            return self.lin(x)

    with pytest.raises(RuntimeError, match="in place.*self.training"):
        wl.empirical_ntk(Counting(), X.float())


ASYM = K + torch.triu(torch.ones_like(K), 1)
#: passes the cheap test (diagonal >= 0, |K_ij| <= sqrt(K_ii K_jj)) but has eigenvalue -0.8
INDEFINITE = torch.tensor([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]], dtype=torch.float64)
BAD_KERNEL = st.sampled_from([ASYM, -K, K - 10 * torch.eye(5, dtype=K.dtype), K[:, :4], K.long(), _with(K, 3, NAN),
                              K.unsqueeze(0), "K", K[:0, :0]])
PREDICT = {
    "gradient_descent_mse": lambda k, **kw: wl.predict.gradient_descent_mse(k, Y, **kw),
    "gp_inference": lambda k, **kw: wl.predict.gp_inference(k, Y, **kw),
    "gradient_descent": lambda k, **kw: wl.predict.gradient_descent(
        lambda f, y: ((f - y) ** 2).mean(), k, Y, **kw),
}


@FAST
@given(k=BAD_KERNEL, fn=st.sampled_from(sorted(PREDICT)))
def test_predict_refuses_bad_train_kernels(k, fn):
    assert_refused(lambda: PREDICT[fn](k), "k_train_train")


def test_indefinite_train_kernels_are_refused_where_they_are_factorised():
    y = torch.ones(3, 1, dtype=torch.float64)
    assert_refused(lambda: wl.predict.gp_inference(INDEFINITE, y)("nngp", INDEFINITE[:1], INDEFINITE[:1, :1]),
                   "k_train_train")
    assert_refused(lambda: wl.predict.gradient_descent_mse(INDEFINITE, y)(1.0, 0.0), "k_train_train")
    assert_refused(lambda: wl.predict.max_learning_rate(INDEFINITE), "ntk_train_train")


@FAST
@given(k=BAD_KERNEL)
def test_max_learning_rate_refuses_bad_kernels(k):
    assert_refused(lambda: wl.predict.max_learning_rate(k), "ntk_train_train")


def test_max_learning_rate_of_a_zero_kernel_is_refused():
    assert_refused(lambda: wl.predict.max_learning_rate(torch.zeros(4, 4)), "ntk_train_train")


@FAST
@given(diag_reg=st.one_of(BAD_REAL, negative().filter(lambda v: v != 0), st.just(1e308)),
       fn=st.sampled_from(["gradient_descent_mse", "gp_inference"]))
def test_predict_refuses_bad_diag_reg(diag_reg, fn):
    def run():
        p = PREDICT[fn](K, diag_reg=diag_reg)
        return p(None, 0.0, 0.0, K[:2]) if fn == "gradient_descent_mse" else p("ntk", K[:2], K[:2, :2])
    assert_refused(run, "diag_reg")


@FAST
@given(t=st.sampled_from(["1", b"1", ["1"], torch.tensor(1 + 1j), 1 + 2j, [1.0, NAN], -1.0, NAN,
                          np.array(["a"]), True, [object()]]))
def test_predict_refuses_bad_times(t):
    assert_refused(lambda: wl.predict.gradient_descent_mse(K, Y)(t, 0.0), "`t`")


@FAST
@given(lr=st.one_of(BAD_REAL, negative()))
def test_predict_learning_rate_checked(lr):
    assert_refused(lambda: wl.predict.gradient_descent_mse(K, Y, learning_rate=lr), "learning_rate")


def _parametrized():
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 1))
    base = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    return wl.parametrize(model, base=base, scheme="mup")


@FAST
@given(lr=st.one_of(BAD_REAL, st.floats(max_value=-1e-9, min_value=-1e9)),
       where=st.sampled_from(["lr", "group", "weight_decay"]))
def test_param_groups_refuses_bad_learning_rates(lr, where):
    model = _parametrized()
    if where == "lr":
        assert_refused(lambda: wl.param_groups(model, lr), "lr")
    elif where == "weight_decay":
        assert_refused(lambda: wl.param_groups(model, 1e-3, weight_decay=lr), "weight_decay")
    else:
        assert_refused(lambda: wl.param_groups([{"params": model.parameters(), "lr": lr}], 1e-3), "lr")


def _make(width):
    return nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 1))


DATA = (torch.randn(8, 3, generator=G), torch.randn(8, 1, generator=G))
COORD_BAD = {
    "widths": st.sampled_from([[8, 8], [16, 8], [8.0, 16.0], [8.5, 16], [0, 8], [-8, 8], [8], "816", 8, [True, 8]]),
    "optimizer": st.sampled_from([5, int, nn.Linear, None, "lbfgs-ish"]),
    "data": st.sampled_from([(torch.randn(8, 5), torch.randn(8, 1)), torch.randn(8, 3), 5, [], [(torch.randn(8, 3),)]]),
    "steps": st.one_of(NOT_INT, non_positive_int()),
    "seeds": st.one_of(NOT_INT, non_positive_int()),
    "lr": st.one_of(BAD_REAL, negative()),
}


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_coord_check_refuses_bad_arguments(data):
    name = data.draw(st.sampled_from(sorted(COORD_BAD)), label="argument")
    value = data.draw(COORD_BAD[name], label="value")
    kw = {"make_model": _make, "widths": [8, 16], "data": DATA, "steps": 1, **{name: value}}
    state = torch.random.get_rng_state()
    assert_refused(lambda: wl.coord_check(**kw), name)
    assert torch.equal(torch.random.get_rng_state(), state)


@FAST
@given(name=st.sampled_from(["in_features", "out_features"]), value=st.one_of(NOT_INT, non_positive_int()))
def test_readout_refuses_bad_dimensions(name, value):
    kw = {"in_features": 4, "out_features": 2, name: value}
    assert_refused(lambda: wl.Readout(**kw), name)


@FAST
@given(value=BAD_REAL)
def test_readout_output_mult_checked(value):
    assert_refused(lambda: wl.Readout(4, 2, output_mult=value), "output_mult")


@FAST
@given(scheme=st.sampled_from(["mupp", None, 3, ""]))
def test_parametrize_refuses_unknown_schemes(scheme):
    assert_refused(lambda: wl.parametrize(_make(16), base=_make(4), scheme=scheme), "scheme")


@FAST
@given(name=st.sampled_from(["n_samples", "seed", "width"]), value=st.sampled_from([0, -2, 1.5, NAN, "2", True, None]))
def test_monte_carlo_kernel_fn_arguments_checked(name, value):
    if name == "seed" and value in (0, -2):
        return                                 # any integer is a seed
    if name == "width" and value is None:
        return                                 # None keeps the architecture's widths
    kw = {"n_samples": 2, "width": 8, "seed": 0, name: value}
    assert_refused(lambda: wl.monte_carlo_kernel_fn(NET, **kw)(X, get="nngp"), name)


@FAST
@given(value=st.sampled_from(["yes", 1, 0.0, "False"]))
def test_kernel_fn_diagonal_spatial_must_be_bool_or_none(value):
    assert_refused(lambda: NET.kernel_fn(X, get="nngp", diagonal_spatial=value), "diagonal_spatial")


@FAST
@given(name=st.sampled_from(["a", "b", "c", "c_adam"]),
       value=st.one_of(BAD_REAL, st.sampled_from([(0.0, 1.0), "abc", (0.0, NAN, 1.0)])))
def test_abc_exponents_checked(name, value):
    assume(not (name == "c_adam" and value is None))     # None is c_adam's documented default
    kw = {"a": 0.0, "b": 0.5, "c": 0.0, name: value}
    assert_refused(lambda: wl.abc(**kw), name)


@settings(max_examples=40, deadline=None)
@given(scale=st.sampled_from([1e-300, 1e-30, 1e-8, 1.0, 1e8, 1e30, 1e150, 1e300]),
       diag_reg=st.sampled_from([0.0, 1e-12, 1e-3, 1.0, 1e10, 1e200]),
       t=st.sampled_from([None, 0.0, 1.0, 1e6, INF, [0.0, 1.0, INF]]),
       absolute=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_predictions_of_valid_extreme_kernels_are_finite_or_refused(scale, diag_reg, t, absolute, dtype):
    k = (K * scale).to(dtype)
    y = Y.to(dtype)
    if not torch.isfinite(k).all():
        return                                 # the float32 cast of a huge kernel: refused as input
    finite_or_warned(lambda: wl.predict.gradient_descent_mse(
        k, y, diag_reg=diag_reg, diag_reg_absolute_scale=absolute)(t, 0.0, 0.0, k[:2]))
    finite_or_warned(lambda: wl.predict.gp_inference(
        k, y, diag_reg=diag_reg, diag_reg_absolute_scale=absolute)("nngp", k[:2], k[:2, :2]))
