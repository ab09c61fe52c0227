"""KernelRidge (scikit-learn conventions) and the ``solver=`` argument of widelimit.predict."""
import numpy as np
import pytest
import torch

import widelimit as wl
from widelimit import layers as L
from widelimit import predict


def _net():
    return L.serial(L.Dense(256, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(1, W_std=1.5, b_std=0.05))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 6))
    y = np.sin(x[:, 0]) + 0.05 * rng.standard_normal(600)
    xt = rng.standard_normal((80, 6))
    return x, y, xt


def _exact(x, y, xt, ridge, get="ntk"):
    net = _net()
    k = net.kernel_fn(torch.from_numpy(x), None, get=get)
    kt = net.kernel_fn(torch.from_numpy(xt), torch.from_numpy(x), get=get)
    return (kt @ torch.linalg.solve(k + ridge * torch.eye(len(x), dtype=k.dtype), torch.from_numpy(y))).numpy()


@pytest.mark.parametrize("solver,kw", [("direct", {}), ("cholesky", {"block_size": 250}),
                                       ("cg", {"tol": 1e-11}), ("cg", {"tol": 1e-11, "n_centers": 100}),
                                       ("falkon", {"n_centers": 600, "tol": 1e-11})])
def test_kernel_ridge_solvers_agree(data, solver, kw):
    x, y, xt = data
    ref = _exact(x, y, xt, 0.05)
    m = wl.KernelRidge(_net(), solver=solver, ridge=0.05, **kw)
    assert m.fit(x, y) is m
    out = m.predict(xt)
    assert isinstance(out, np.ndarray) and out.shape == (80,)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    info = m.solve_info_
    assert info["solver"] == solver and info["residual"] < 1e-9
    if solver == "cg":
        assert info["iterations"] > 0 and len(info["residuals"]) == info["iterations"] + 1


def test_kernel_ridge_sklearn_conventions(data):
    from sklearn.base import clone
    x, y, xt = data
    m = wl.KernelRidge(_net(), kernel="nngp", solver="auto", ridge=0.1)
    assert m.get_params()["kernel"] == "nngp"
    m2 = clone(m).set_params(ridge=0.2)
    assert m2.ridge == 0.2 and m.ridge == 0.1
    np.testing.assert_allclose(m.fit(x, y).predict(xt), _exact(x, y, xt, 0.1, "nngp"), atol=1e-8)
    assert m.solve_info_["solver"] == "direct"
    # a small budget makes "auto" choose Falkon
    small = wl.KernelRidge(_net(), solver="auto", ridge=0.1, max_memory=10**5, n_centers=200).fit(x, y)
    assert small.solve_info_["solver"] == "falkon" and small.solve_info_["converged"]
    # from a stored kernel (numpy array sliced [rows, cols]): same predictions
    k = _net().kernel_fn(torch.from_numpy(x), None, get="nngp").numpy()
    stored = wl.KernelRidge(_net(), kernel="nngp", solver="cg", ridge=0.1, tol=1e-12, store=k).fit(x, y)
    np.testing.assert_allclose(stored.predict(xt), m.predict(xt), atol=1e-8)
    with pytest.raises(ValueError, match="`solver`"):
        wl.KernelRidge(_net(), solver="lsqr").fit(x, y)
    with pytest.raises(ValueError, match="`y`"):
        wl.KernelRidge(_net()).fit(x, y[:10])
    with pytest.raises(ValueError, match="`ridge`"):
        wl.KernelRidge(_net(), ridge=-1.0).fit(x, y)


def test_predict_functions_accept_a_solver(data):
    x, y, xt = data
    net = _net()
    xx, xs = torch.from_numpy(x), torch.from_numpy(xt)
    k = net.kernel_fn(xx, None, get="ntk")
    kt = net.kernel_fn(xs, xx, get="ntk")
    yy = torch.from_numpy(y)
    base = predict.gradient_descent_mse(k, yy, diag_reg=1e-2)(None, 0.0, 0.0, kt)[1]
    for solver in ("cholesky", "cg", lambda a, b: torch.linalg.solve(a, b)):
        out = predict.gradient_descent_mse(k, yy, diag_reg=1e-2, solver=solver)(None, 0.0, 0.0, kt)[1]
        torch.testing.assert_close(out, base, rtol=0, atol=1e-7 * float(base.abs().max()))
    g0 = predict.gp_inference(k, yy, diag_reg=1e-2)(get="ntk", k_test_train=kt)
    g1 = predict.gp_inference(k, yy, diag_reg=1e-2, solver="cg")(get="ntk", k_test_train=kt)
    torch.testing.assert_close(g1, g0, rtol=0, atol=1e-7 * float(g0.abs().max()))
    with pytest.raises(ValueError, match="`solver`"):
        predict.gp_inference(k, yy, solver="nope")
