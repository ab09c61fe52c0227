"""Closed-form MSE dynamics: explicit gradient descent, kernel ridge regression, PSD covariances."""
import numpy as np
import pytest
import torch
from sklearn.kernel_ridge import KernelRidge

from widelimit import predict


def explicit_gd(k_dd, k_td, y, f0, g0, lr, t, dt):
    """Euler steps of the linearised dynamics df/dt = -lr * Theta (f - y) / (N K)."""
    n = y.numel()
    f, g = f0.clone(), g0.clone()
    for _ in range(int(round(t / dt))):
        r = (f - y) * (lr * dt / n)
        f, g = f - k_dd @ r, g - k_td @ r
    return f, g


def test_closed_form_matches_explicit_gradient_descent(problem):
    """Euler GD at steps dt, dt/2, dt/4, Richardson-extrapolated (O(dt^3)): agrees to 1e-6."""
    kd, ktd, y = problem["kd"].ntk, problem["ktd"].ntk, problem["y"]
    f0 = 0.1 * torch.randn(y.shape, dtype=torch.float64)
    g0 = 0.1 * torch.randn(ktd.shape[0], 2, dtype=torch.float64)
    lr = 0.5 * y.numel() / torch.linalg.eigvalsh(kd)[-1].item()
    fn = predict.gradient_descent_mse(kd, y, learning_rate=lr)
    for t in (3.0, 12.0):
        tr, te = fn(t, f0, g0, ktd)
        dt = 0.02
        runs = [explicit_gd(kd, ktd, y, f0, g0, lr, t, dt / s) for s in (1, 2, 4)]
        for i, ref in enumerate((tr, te)):
            a, b, c = (r[i] for r in runs)
            extrap = (8 * c - 6 * b + a) / 3
            err = (extrap - ref).abs().max() / (ref - (f0, g0)[i]).abs().max()
            assert err < 1e-6, (t, i, float(err))


@pytest.mark.parametrize("reg", [1e-3, 0.1])
def test_infinite_time_is_kernel_ridge_regression(problem, reg):
    kd, ktd, y = problem["kd"].ntk.numpy(), problem["ktd"].ntk.numpy(), problem["y"].numpy()
    alpha = reg * np.trace(kd) / kd.shape[0]
    krr = KernelRidge(alpha=alpha, kernel="precomputed").fit(kd, y)
    fn = predict.gradient_descent_mse(kd, y, diag_reg=reg)
    got = fn(None, 0.0, np.zeros((ktd.shape[0], 2)), ktd)[1]
    np.testing.assert_allclose(got, krr.predict(ktd), rtol=1e-9, atol=1e-9)
    late = fn(np.inf, 0.0, np.zeros((ktd.shape[0], 2)), ktd)[1]   # eigh path, t = inf
    np.testing.assert_allclose(late, got, rtol=1e-8, atol=1e-8)


def test_ensemble_mean_is_gradient_descent_mse_from_zero(problem):
    net, x, xt, y = problem["net"], problem["x"], problem["xt"], problem["y"]
    ens = predict.gradient_descent_mse_ensemble(net.kernel_fn, x, y, learning_rate=2.0, diag_reg=1e-4)
    fn = predict.gradient_descent_mse(problem["kd"].ntk, y, learning_rate=2.0, diag_reg=1e-4)
    t = [0.0, 1.0, 10.0, 100.0]
    mean = ens(t, xt, "ntk")
    ref = fn(t, 0.0, torch.zeros(6, 2, dtype=torch.float64), problem["ktd"].ntk)[1]
    torch.testing.assert_close(mean, ref, rtol=1e-10, atol=1e-12)
    assert mean.shape == (4, 6, 2)
    torch.testing.assert_close(mean[0], torch.zeros(6, 2, dtype=torch.float64))


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_ensemble_covariance_symmetric_psd(problem, get):
    ens = predict.gradient_descent_mse_ensemble(problem["net"], problem["x"], problem["y"],
                                                diag_reg=1e-4)
    for t in ([0.0, 0.3, 3.0, 30.0, np.inf], None):
        for x_test in (problem["xt"], None):
            cov = ens(t, x_test, get, compute_cov=True).covariance
            cov = cov.reshape((-1,) + cov.shape[-2:])
            scale = cov.diagonal(dim1=1, dim2=2).abs().max().item() + 1e-300
            torch.testing.assert_close(cov, cov.transpose(1, 2), rtol=0, atol=1e-10 * scale)
            evals = torch.linalg.eigvalsh(0.5 * (cov + cov.transpose(1, 2)))
            assert evals.min().item() >= -1e-8 * scale, (get, t, evals.min().item())
    # at t = 0 the covariance is the prior NNGP
    cov0 = ens(0.0, problem["xt"], get, compute_cov=True).covariance
    torch.testing.assert_close(cov0, problem["ktt"].nngp, rtol=1e-10, atol=1e-12)


def test_time_shapes_and_types(problem):
    kd, ktd, y = problem["kd"].ntk, problem["ktd"].ntk, problem["y"]
    fn = predict.gradient_descent_mse(kd, y)
    g0 = torch.zeros(6, 2, dtype=torch.float64)
    assert fn(1.0, 0.0, g0, ktd)[1].shape == (6, 2)
    assert fn([[1.0, 2.0], [3.0, 4.0]], 0.0, g0, ktd)[1].shape == (2, 2, 6, 2)
    assert fn(torch.tensor([1.0, 2.0]), None, g0, ktd).shape == (2, 6, 2)
    assert fn(None, 0.0).shape == (20, 2)
    fn1 = predict.gradient_descent_mse(kd.numpy(), y[:, 0].numpy())          # 1-D targets
    out = fn1([1.0, 5.0], np.zeros(20), np.zeros(6), ktd.numpy())
    assert isinstance(out[0], np.ndarray) and out[0].shape == (2, 20) and out[1].shape == (2, 6)


def test_max_learning_rate_is_the_stability_edge(problem):
    kd, y = problem["kd"].ntk, problem["y"][:, :1]
    lr = predict.max_learning_rate(kd)
    lam = torch.linalg.eigvalsh(kd)[-1].item()
    n = y.numel()
    for factor, diverges in ((0.98, False), (1.02, True)):
        f = torch.zeros_like(y)
        for _ in range(3000):
            f = f - factor * lr / n * kd @ (f - y)
        assert (not torch.isfinite(f).all() or f.abs().max() > 1e3) == diverges, factor
    assert lr == pytest.approx(2 * n / lam, rel=1e-9)


def test_float32_and_numpy_kernel_fn(problem):
    """float32 in, float32 out (1e-3 of float64); a kernel_fn returning NumPy works too."""
    kd, ktd, y = problem["kd"].ntk, problem["ktd"].ntk, problem["y"]
    fn64 = predict.gradient_descent_mse(kd, y, diag_reg=1e-3)
    fn32 = predict.gradient_descent_mse(kd.float(), y.float(), diag_reg=1e-3)
    for t in (None, [1.0, 10.0]):
        a = fn32(t, 0.0, torch.zeros(6, 2), ktd.float())[1]
        b = fn64(t, 0.0, torch.zeros(6, 2, dtype=torch.float64), ktd)[1]
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-3 * b.abs().max().item())

    def numpy_kernel_fn(x1, x2, get):
        out = problem["net"].kernel_fn(np.asarray(x1), None if x2 is None else np.asarray(x2), get=get)
        return out
    ens = predict.gradient_descent_mse_ensemble(numpy_kernel_fn, problem["x"], y, diag_reg=1e-3)
    ref = predict.gradient_descent_mse_ensemble(problem["net"], problem["x"], y, diag_reg=1e-3)
    torch.testing.assert_close(ens(5.0, problem["xt"], "ntk"), ref(5.0, problem["xt"], "ntk"))
