"""RF eigenframework ("More is Better", Simon et al. 2023) against Gaussian random features."""
import numpy as np
import pytest

from widelimit.analysis import eigenlearning, rf_eigenlearning

D = 1000
LAM = np.arange(1, D + 1, dtype=float) ** -1.5
V = np.arange(1, D + 1, dtype=float) ** -0.75
NOISE = 0.1


def _rf_gaussian(n, k, ridge, seeds):
    """Exact test MSE of RF ridge regression: x = z sqrt(lam) (linear kernel, eigenvalues lam),
    features g = x W / sqrt(k), W ~ N(0, 1)^(D, k), so E[g g'^T] = x . x'."""
    w = V / np.sqrt(LAM)
    errs = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, D))
        y = z @ V + NOISE * rng.standard_normal(n)
        wk = rng.standard_normal((D, k))
        g = (z * np.sqrt(LAM)) @ wk / np.sqrt(k)
        a = np.linalg.lstsq(g.T @ g + ridge * np.eye(k), g.T @ y, rcond=None)[0]
        errs.append(np.sum(LAM * (wk @ a / np.sqrt(k) - w) ** 2) + NOISE ** 2)
    return float(np.mean(errs))


@pytest.mark.parametrize("k, n, ridge", [(50, 100, 1e-3), (50, 400, 1e-3), (200, 100, 1e-1),
                                         (200, 400, 1e-3), (400, 200, 1e-2), (50, 400, 0.0)])
def test_rf_risk_matches_gaussian_random_features(k, n, ridge):
    measured = _rf_gaussian(n, k, ridge, range(16 if n <= 200 else 6))
    predicted = rf_eigenlearning(LAM, V, n, k, ridge, NOISE).test_mse
    assert predicted == pytest.approx(measured, rel=0.10)


def test_limits_and_monotonicity():
    kr = eigenlearning(LAM, V, 300, 1e-3, NOISE).test_mse
    assert rf_eigenlearning(LAM, V, 300, float("inf"), 1e-3, NOISE).test_mse == pytest.approx(kr, rel=1e-12)
    assert rf_eigenlearning(LAM, V, 300, 1e8, 1e-3, NOISE).test_mse == pytest.approx(kr, rel=1e-4)
    # "more is better" at a tuned ridge: the best risk over ridges decreases with k and n
    ridges = np.logspace(-4, 1, 21)
    best = lambda n, k: min(rf_eigenlearning(LAM, V, n, k, r, NOISE).test_mse for r in ridges)  # noqa: E731
    assert best(200, 50) > best(200, 200) > best(200, 1000)
    assert best(100, 200) > best(400, 200)
    # ridgeless, more samples than features: least squares on k features, E0 = n / (n - k)
    p = rf_eigenlearning(LAM, V, 400, 50, 0.0, NOISE)
    assert p.kappa == 0.0 and p.overfitting_coefficient == pytest.approx(400 / 350)
    assert rf_eigenlearning(LAM, V, 50, 50, 0.0).test_mse == np.inf


def test_identity_gamma_kappa():
    p = rf_eigenlearning(LAM, V, 300, 500, 1e-2)
    df = np.sum(LAM / (LAM + p.gamma))
    assert p.kappa == pytest.approx(p.gamma * (1 - df / 500), rel=1e-10)
    assert df + 1e-2 / p.kappa == pytest.approx(300, rel=1e-10)
    assert p.gamma > p.kappa > 0


def test_bad_input():
    with pytest.raises(ValueError, match="n_features"):
        rf_eigenlearning(LAM, V, 10, 0)
    with pytest.raises(ValueError, match="n_features"):
        rf_eigenlearning(LAM, V, 10, True)
    with pytest.raises(ValueError, match="coefficients"):
        rf_eigenlearning(LAM, V[:5], 10, 10)
    with pytest.raises(ValueError, match="ridge"):
        rf_eigenlearning(LAM, V, 10, 10, ridge=-1)


def _relu_rf_regression(n, k, ridge, seeds, pool=1200):
    """Measured RF ridge regression with wl.random_features of a one-hidden-layer ReLU net
    (iid features g with E[g g'^T] = NNGP) on a finite pool (the population), against the
    RF eigenframework with the pool's kernel spectrum."""
    import torch

    import widelimit as wl
    from widelimit import layers as L
    from widelimit.analysis import target_coefficients
    net = L.serial(L.Dense(1, W_std=1.0, b_std=0.2), L.Relu())
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((pool, 4)))
    y = np.sin(2 * x[:, 0].numpy()) + x[:, 1].numpy() * x[:, 2].numpy()
    K = net.kernel_fn(x, get="nngp").numpy()
    ev, U = np.linalg.eigh(K)
    lam = np.clip(ev[::-1], 0, None) / pool
    v = target_coefficients(U[:, ::-1], y)
    errs = []
    for seed in seeds:
        r = np.random.default_rng(seed + 1)
        g = wl.random_features(net, k, seed=seed)(x).numpy()
        tr = r.integers(0, pool, n)
        yn = y[tr] + NOISE * r.standard_normal(n)
        a = np.linalg.solve(g[tr].T @ g[tr] + ridge * np.eye(k), g[tr].T @ yn)
        errs.append(np.mean((g @ a - y) ** 2) + NOISE ** 2)
    return float(np.mean(errs)), rf_eigenlearning(lam, v, n, k, ridge, NOISE).test_mse


@pytest.mark.parametrize("k, n, ridge", [(64, 200, 1e-3), (256, 100, 1e-2), (128, 400, 1e-2)])
def test_rf_risk_matches_relu_random_features(k, n, ridge):
    measured, predicted = _relu_rf_regression(n, k, ridge, range(12))
    assert predicted == pytest.approx(measured, rel=0.15)
