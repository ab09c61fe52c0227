"""Random features (widelimit/scale/features.py) against the analytic kernels, float64."""
import numpy as np
import pytest
import torch

import widelimit as wl
from widelimit import layers as L

FS = [128, 256, 512, 1024, 2048]


def _net(depth, nonlin, parameterization="ntk"):
    hidden = []
    for i in range(depth):
        hidden += [L.Dense(64, W_std=1.2 + 0.1 * i, b_std=0.3, parameterization=parameterization), nonlin()]
    return L.serial(*hidden, L.Dense(1, W_std=0.9, b_std=0.2, parameterization=parameterization))


def _x(n=8, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def _rel_err(net, get, F, seeds, x, method="arccos"):
    K = net.kernel_fn(x, get=get)
    errs = []
    for s in seeds:
        p = wl.random_features(net, F, get=get, seed=s, method=method)(x)
        errs.append(float(torch.linalg.norm(p @ p.T - K) / torch.linalg.norm(K)))
    return float(np.mean(errs))


CASES = [(1, L.Relu), (2, lambda: L.LeakyRelu(0.2)), (3, L.Abs), (2, lambda: L.ABRelu(-0.4, 1.3))]


@pytest.mark.slow
@pytest.mark.parametrize("get", ["nngp", "ntk"])
@pytest.mark.parametrize("depth, nonlin", CASES)
def test_error_falls_like_inverse_sqrt_features(depth, nonlin, get):
    net, x = _net(depth, nonlin), _x()
    errs = [_rel_err(net, get, F, range(6), x) for F in FS]
    slope = np.polyfit(np.log(FS), np.log(errs), 1)[0]
    assert -0.65 <= slope <= -0.35, (slope, errs)
    assert errs[-1] < 0.12


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_unbiased_one_hidden_layer(get):
    """One hidden layer: every step is unbiased, so the mean over seeds converges to K
    (mean error over 40 seeds ~ single error / sqrt(40))."""
    net, x = _net(1, L.Relu), _x()
    K = net.kernel_fn(x, get=get)
    mean = sum(wl.random_features(net, 256, get=get, seed=s)(x) @
               wl.random_features(net, 256, get=get, seed=s)(x).T for s in range(40)) / 40
    single = _rel_err(net, get, 256, range(3), x)
    assert float(torch.linalg.norm(mean - K) / torch.linalg.norm(K)) < 0.4 * single


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_standard_parameterization_and_deep_bias_small(get):
    net, x = _net(2, L.Relu, "standard"), _x()
    assert _rel_err(net, get, 4096, range(3), x) < 0.1


def test_deterministic_blocks_out_numpy(tmp_path):
    net, x = _net(2, L.Relu), _x(n=37)
    rf = wl.random_features(net, 300, get="ntk", seed=7)
    a = rf(x)
    assert a.shape == (37, 300) and a.dtype == torch.float64
    assert torch.equal(a, wl.random_features(net, 300, get="ntk", seed=7)(x))
    assert not torch.equal(a, wl.random_features(net, 300, get="ntk", seed=8)(x))
    torch.testing.assert_close(rf(x, block_size=5), a, rtol=1e-12, atol=1e-14)
    mm = np.lib.format.open_memmap(tmp_path / "phi.npy", mode="w+", dtype=np.float64, shape=(37, 300))
    assert rf(x.numpy(), out=mm, block_size=8) is mm
    np.testing.assert_allclose(mm, a.numpy(), rtol=1e-12, atol=1e-14)
    f32 = rf(x.float())
    assert f32.dtype == torch.float32
    np.testing.assert_allclose(f32.numpy(), a.numpy(), rtol=1e-3, atol=1e-4)
    assert isinstance(rf(x.numpy()), np.ndarray)


def test_sign_identity_and_exact_linear():
    x = _x()
    lin = L.serial(L.Dense(3, W_std=1.5, b_std=0.5), L.Identity(), L.Dense(1, W_std=0.7))
    for get in ("nngp", "ntk"):  # a linear net: the features are exact (no sampling at all)
        p = wl.random_features(lin, 16, get=get)(x)
        torch.testing.assert_close(p @ p.T, lin.kernel_fn(x, get=get), rtol=1e-12, atol=1e-12)
    sgn = L.serial(L.Dense(3, b_std=0.1), L.Sign(), L.Dense(1))
    assert _rel_err(sgn, "nngp", 4096, range(2), x) < 0.06
    assert _rel_err(sgn, "ntk", 4096, range(2), x) < 0.06


@pytest.mark.parametrize("layer", [L.Erf(), L.Conv(4, (3, 3)), L.GlobalSelfAttention(4, 2, 2, 1)])
def test_refuses_unsupported_layers(layer):
    net = L.serial(L.Dense(4), layer)
    with pytest.raises(ValueError, match=type(layer).__name__):
        wl.random_features(net, 16)


def test_bad_input():
    net = _net(1, L.Relu)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_features"):
            wl.random_features(net, bad)
    with pytest.raises(ValueError, match="get"):
        wl.random_features(net, 8, get="cov")
    with pytest.raises(ValueError, match="method"):
        wl.random_features(net, 8, method="rff")
    with pytest.raises(TypeError, match="seed"):
        wl.random_features(net, 8, seed="a")
    with pytest.raises(ValueError, match="Dense layer before"):
        wl.random_features(L.serial(L.Relu(), L.Dense(1)), 8)
    rf = wl.random_features(net, 8)
    with pytest.raises(ValueError, match="shape"):
        rf(torch.zeros(3, 4, 2))
    with pytest.raises(TypeError, match="x"):
        rf([[1.0, 2.0]])
    rf(torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="dimension 4"):
        rf(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="out"):
        rf(torch.zeros(3, 4), out=np.zeros((3, 9)))
    with pytest.raises(ValueError, match="block_size"):
        rf(torch.zeros(3, 4), block_size=0)
    with pytest.raises(ValueError, match="non-finite"):
        rf(torch.tensor([[0.0, 1.0, float("nan"), 2.0]]))


# method="snnk": ReLU-SNNK features with orthogonal random features (widelimit/scale/snnk.py)

@pytest.mark.parametrize("get", ["nngp", "ntk"])
@pytest.mark.parametrize("depth", [1, 2])
def test_snnk_error_falls_like_inverse_sqrt_features(depth, get):
    net, x = _net(depth, L.Relu), _x()
    errs = [_rel_err(net, get, F, range(6), x, method="snnk") for F in FS]
    slope = np.polyfit(np.log(FS), np.log(errs), 1)[0]
    assert -0.7 <= slope <= -0.3, (slope, errs)
    assert errs[-1] < 0.12


def test_snnk_orthogonal_gaussian_columns():
    from widelimit.scale.snnk import orthogonal_gaussian
    gen = torch.Generator().manual_seed(0)
    g = orthogonal_gaussian(6, 40, gen)
    assert g.shape == (6, 40) and g.dtype == torch.float64
    gram = g[:, :6].T @ g[:, :6]  # one block: orthogonal columns with chi(6) lengths
    torch.testing.assert_close(gram, torch.diag(torch.diagonal(gram)), rtol=0, atol=1e-12)
    big = orthogonal_gaussian(3, 60000, gen)  # columns N(0, I): mean 0, covariance I
    torch.testing.assert_close(torch.cov(big), torch.eye(3, dtype=torch.float64), rtol=0, atol=0.03)
    assert orthogonal_gaussian(200, 300, gen, block=128).shape == (200, 300)
    assert orthogonal_gaussian(0, 5, gen).shape == (0, 5)


def test_snnk_deterministic_shapes_and_solver_conventions(tmp_path):
    net, x = _net(2, L.Relu), _x(n=37)
    for get in ("nngp", "ntk"):
        rf = wl.random_features(net, 300, get=get, method="snnk", seed=7)
        a = rf(x)
        assert a.shape == (37, 300) and a.dtype == torch.float64 and rf.method == "snnk"
        assert torch.equal(a, wl.random_features(net, 300, get=get, method="snnk", seed=7)(x))
        assert not torch.equal(a, wl.random_features(net, 300, get=get, method="snnk", seed=8)(x))
        assert not torch.equal(a, wl.random_features(net, 300, get=get, seed=7)(x))  # not the arccos draw
        torch.testing.assert_close(rf(x, block_size=5), a, rtol=1e-12, atol=1e-14)
        assert isinstance(rf(x.numpy()), np.ndarray)
    mm = np.lib.format.open_memmap(tmp_path / "phi.npy", mode="w+", dtype=np.float64, shape=(37, 300))
    assert rf(x.numpy(), out=mm, block_size=8) is mm
    np.testing.assert_allclose(mm, a.numpy(), rtol=1e-12, atol=1e-14)
    lin = L.serial(L.Dense(3, W_std=1.5, b_std=0.5), L.Dense(1, W_std=0.7))  # no sampling: exact
    p = wl.random_features(lin, 16, get="ntk", method="snnk")(x)
    torch.testing.assert_close(p @ p.T, lin.kernel_fn(x, get="ntk"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer", [L.Erf(), L.Exp(), L.Conv(4, (3, 3))])
def test_snnk_refuses_unsupported_layers(layer):
    with pytest.raises(ValueError, match=type(layer).__name__):
        wl.random_features(L.serial(L.Dense(4), layer), 16, method="snnk")
    with pytest.raises(ValueError, match="Dense layer before"):
        wl.random_features(L.serial(L.Relu(), L.Dense(1)), 8, method="snnk")


def test_snnk_features_in_ridge_regression_match_kernel_ridge():
    """The solvers' use: ridge regression on the features ~ kernel ridge regression with K."""
    net = _net(1, L.Relu)
    x, xt = _x(n=40, seed=1), _x(n=10, seed=2)
    y = torch.sin(x.sum(1, keepdim=True))
    k, kt = net.kernel_fn(x, get="nngp"), net.kernel_fn(xt, x, get="nngp")
    exact = kt @ torch.linalg.solve(k + 0.1 * torch.eye(40, dtype=k.dtype), y)
    rf = wl.random_features(net, 4096, method="snnk", seed=3)
    p, pt = rf(x), rf(xt)
    w = torch.linalg.solve(p.T @ p + 0.1 * torch.eye(4096, dtype=p.dtype), p.T @ y)
    assert float(torch.linalg.norm(pt @ w - exact) / torch.linalg.norm(exact)) < 0.1
