"""Eigenlearning (Simon et al., TMLR 2023): identities, the kappa root, predicted vs measured MSE."""
import numpy as np
import pytest
import torch

from widelimit.analysis import eigenlearning, predict_learning_curve, solve_kappa

D = 1000
LAM = np.arange(1, D + 1, dtype=float) ** -1.5
V = np.arange(1, D + 1, dtype=float) ** -0.75


@pytest.mark.parametrize("n, ridge", [(10, 0.0), (10, 1e-3), (300, 1.0), (999, 0.0), (2000, 1e-4), (7.5, 0.2)])
def test_identities(n, ridge):
    p = eigenlearning(LAM, V, n, ridge, noise=0.1)
    L = p.learnabilities
    assert ((L >= 0) & (L <= 1)).all()
    # the conservation law: sum_i L_i = n - delta / kappa
    assert L.sum() + ridge / p.kappa == pytest.approx(n, rel=1e-10)
    assert p.overfitting_coefficient >= 1
    assert p.test_mse == pytest.approx(p.bias + p.overfitting_coefficient * 0.01, rel=1e-12)
    assert p.train_mse <= p.test_mse


def test_kappa_monotone_and_limits():
    ks = [solve_kappa(LAM, n, 1e-3) for n in (10, 100, 1000)]
    assert ks[0] > ks[1] > ks[2] > 0
    # more samples than modes, no ridge: kappa = 0, OLS overfitting n / (n - D)
    p = eigenlearning(LAM, V, 4 * D, 0.0, noise=0.5)
    assert p.kappa == 0.0 and p.overfitting_coefficient == pytest.approx(4 / 3)
    assert p.test_mse == pytest.approx(4 / 3 * 0.25)
    assert eigenlearning(LAM, V, D, 0.0).test_mse == np.inf  # interpolation threshold
    # one mode, closed form: lam/(lam+k) + d/k = n
    k = solve_kappa([2.0], 1.0, 1.0)
    assert 2 / (2 + k) + 1 / k == pytest.approx(1.0, rel=1e-12)


def _ridge_gaussian_design(n, seeds, ridge, noise):
    """Exact test MSE of ridge regression with Gaussian eigenfeatures phi = z ~ N(0, I):
    x = z sqrt(lam), linear kernel x.x' (eigenvalues lam), y = z v + noise."""
    w = V / np.sqrt(LAM)
    errs = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, D))
        x = z * np.sqrt(LAM)
        y = z @ V + noise * rng.standard_normal(n)
        if n < D:
            beta = x.T @ np.linalg.solve(x @ x.T + ridge * np.eye(n), y)
        else:
            beta = np.linalg.solve(x.T @ x + ridge * np.eye(D), x.T @ y)
        errs.append(np.sum(LAM * (beta - w) ** 2) + noise ** 2)
    return float(np.mean(errs))


@pytest.mark.parametrize("n", [50, 100, 200, 500, 1000, 2000])
def test_predicted_vs_measured_within_10_percent(n):
    seeds = range(48) if n <= 200 else range(4)
    measured = _ridge_gaussian_design(n, seeds, ridge=1e-3, noise=0.1)
    predicted = eigenlearning(LAM, V, n, 1e-3, noise=0.1).test_mse
    assert predicted == pytest.approx(measured, rel=0.10)


def _digits_pool():
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0)
    x = x - x.mean(0)
    x = x / x.norm(dim=1, keepdim=True) * np.sqrt(x.shape[1])
    return x, np.eye(10)[y] - 0.1


def test_learning_curve_on_digits_ntk():
    from widelimit import layers as L
    x, y = _digits_pool()
    net = L.serial(L.Dense(512, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(512, W_std=1.5, b_std=0.05),
                   L.Relu(), L.Dense(1, W_std=1.5))
    lc = predict_learning_curve(net.kernel_fn, x, y, ns=[25, 100, 400], ridge=1e-2, n_test=500,
                                seeds=range(5), get="ntk")
    assert (np.diff(lc.measured) < 0).all() and (np.diff(lc.predicted) < 0).all()
    assert lc.relative_error.max() < 0.10, lc.relative_error
    assert (lc.predicted >= lc.predicted_pool).all()


def test_bad_input():
    x = torch.randn(50, 3, dtype=torch.float64)
    kfn = lambda a, b: a @ b.T  # noqa: E731
    with pytest.raises(ValueError, match="pool has only 50"):
        predict_learning_curve(kfn, x, x[:, 0], ns=[45], n_test=10)
    with pytest.raises(ValueError, match="shape"):
        predict_learning_curve(kfn, x, x[:10, 0], ns=[5])
    with pytest.raises(ValueError, match="empty"):
        predict_learning_curve(kfn, x, x[:, 0], ns=[])
    with pytest.raises(TypeError, match="callable"):
        predict_learning_curve(None, x, x[:, 0], ns=[5])
    with pytest.raises(ValueError, match="returned shape"):
        predict_learning_curve(lambda a, b: a[:, :2], x, x[:, 0], ns=[5])
    with pytest.raises(ValueError, match="non-negative"):
        eigenlearning([1.0, -0.5], [1.0, 1.0], 3)
    with pytest.raises(ValueError, match="coefficients"):
        eigenlearning([1.0, 0.5], [1.0], 3)
    with pytest.raises(ValueError, match="`n`"):
        eigenlearning([1.0, 0.5], [1.0, 1.0], 0)
    with pytest.raises(ValueError, match="ridge"):
        solve_kappa([1.0], 1, ridge=-1.0)
    with pytest.raises(ValueError, match="noise"):
        eigenlearning([1.0], [1.0], 1, noise=float("nan"))
