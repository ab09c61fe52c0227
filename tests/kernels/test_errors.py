"""Bad input gives a clear error that names the argument."""
import numpy as np
import pytest
import torch

from widelimit import layers as L

NET = L.serial(L.Dense(16, W_std=1.5, b_std=0.1), L.Relu(), L.Dense(1))
X = torch.randn(4, 3, dtype=torch.float64)


def test_mismatched_feature_dims():
    with pytest.raises(ValueError, match="x1.*x2"):
        NET.kernel_fn(X, torch.randn(2, 5, dtype=torch.float64))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_inf(bad):
    x = X.clone()
    x[1, 1] = bad
    with pytest.raises(ValueError, match="`x1` contains NaN or inf"):
        NET.kernel_fn(x)
    with pytest.raises(ValueError, match="`x2` contains NaN or inf"):
        NET.kernel_fn(X, x)


def test_integer_inputs():
    with pytest.raises(TypeError, match="`x1` must be a floating-point"):
        NET.kernel_fn(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="`x1` must be a floating-point"):
        NET.kernel_fn(np.ones((3, 3), dtype=np.int32))
    with pytest.raises(TypeError, match="`x1` must be a torch.Tensor or numpy.ndarray"):
        NET.kernel_fn([[1.0, 2.0]])


def test_wrong_ndim():
    with pytest.raises(ValueError, match="`x1` must have at least 2 dimensions"):
        NET.kernel_fn(torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("layer", [L.Relu(), L.Erf(), L.Tanh(), L.Gelu(), L.LayerNorm()])
def test_nonlinearity_before_dense(layer):
    with pytest.raises(ValueError, match="Dense or Conv"):
        L.serial(layer, L.Dense(1)).kernel_fn(X)


def test_nonlinearity_after_nonlinearity():
    with pytest.raises(ValueError, match="Gaussian"):
        L.serial(L.Dense(4), L.Relu(), L.Relu()).kernel_fn(X)


def test_unknown_get():
    with pytest.raises(ValueError, match="`get` must be one of"):
        NET.kernel_fn(X, get="cntk")
    with pytest.raises(ValueError, match="`get`"):
        NET.kernel_fn(X, get=("nngp", "foo"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(out_dim=0), "out_dim"), (dict(out_dim=-3), "out_dim"), (dict(out_dim=2.5), "out_dim"),
    (dict(out_dim=4, W_std=0.0), "W_std"), (dict(out_dim=4, W_std=-1.0), "W_std"),
    (dict(out_dim=4, b_std=-0.1), "b_std"), (dict(out_dim=4, W_std=float("nan")), "W_std"),
    (dict(out_dim=4, parameterization="mup"), "parameterization"),
    (dict(out_dim=4, s=(0, 1)), "`s`"),
])
def test_bad_dense_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):     # TypeError: a float width
        L.Dense(**kwargs)


def test_bad_width_and_samples():
    with pytest.raises(ValueError, match="width"):
        NET.with_width(0)
    with pytest.raises(ValueError, match="`n`"):
        L.repeat(L.Relu(), 0)
    with pytest.raises(TypeError, match="widelimit layer"):
        L.serial(L.Dense(2), torch.nn.ReLU())


def test_branching_misuse():
    with pytest.raises(ValueError, match="FanOut"):
        L.serial(L.Dense(4), L.parallel(L.Relu(), L.Relu())).kernel_fn(X)
    with pytest.raises(ValueError, match="Gaussian"):
        L.serial(L.FanOut(2), L.parallel(L.Identity(), L.Dense(3)), L.FanInSum()).kernel_fn(X)
    with pytest.raises(ValueError, match="channels"):
        L.serial(L.Dense(4), L.FanOut(2), L.parallel(L.Dense(3), L.Dense(4)), L.FanInSum()).kernel_fn(X)


def test_dropout_arguments():
    with pytest.raises(ValueError, match="rate"):
        L.Dropout(0.0)
    with pytest.raises(ValueError, match="mode"):
        L.Dropout(0.5, mode="eval")
    with pytest.raises(ValueError, match="input"):
        L.serial(L.Dropout(0.5), L.Dense(1)).kernel_fn(X)
