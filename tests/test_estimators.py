"""scikit-learn estimators: check_estimator, Pipeline, GridSearchCV, return_std, accuracy."""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_regression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import widelimit as wl
from widelimit import layers as L

SMALL = L.serial(L.Dense(64, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(1, W_std=1.5, b_std=0.05))

# Every check of scikit-learn 1.9 passes, none is skipped (the two pytest skips are sklearn's
# own array-API checks, which need SCIPY_ARRAY_API set in the environment).
EXPECTED_FAILED: dict = {}


@pytest.fixture(autouse=True)
def _one_thread():
    """check_estimator fits hundreds of tiny problems: one intra-op thread avoids OpenMP
    spin-waits that dominate when the cores are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@parametrize_with_checks([wl.NTKRegressor(SMALL), wl.NTKClassifier(SMALL)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_regressor_matches_the_ensemble_and_std():
    X, y = make_regression(60, 5, noise=0.1, random_state=0)
    X = StandardScaler().fit_transform(X)
    y = y / y.std()
    reg = wl.NTKRegressor(SMALL, t=20.0, diag_reg=1e-3, learning_rate=0.5).fit(X[:40], y[:40])
    mean, std = reg.predict(X[40:], return_std=True)
    ens = wl.predict.gradient_descent_mse_ensemble(SMALL, X[:40], y[:40, None], learning_rate=0.5,
                                                   diag_reg=1e-3)
    ref = ens(20.0, X[40:], "ntk", compute_cov=True)
    np.testing.assert_allclose(mean, ref.mean[:, 0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(std, np.sqrt(np.diag(ref.covariance)), rtol=1e-8, atol=1e-12)
    assert mean.shape == std.shape == (20,)
    multi = wl.NTKRegressor(SMALL).fit(X[:40], np.stack([y[:40], -y[:40]], 1))
    m2, s2 = multi.predict(X[40:], return_std=True)
    assert m2.shape == s2.shape == (20, 2)
    np.testing.assert_allclose(m2[:, 0], -m2[:, 1], rtol=1e-10, atol=1e-12)


def test_pipeline_and_grid_search_on_digits():
    X, y = load_digits(return_X_y=True)
    X, y = X[:400], y[:400]
    pipe = make_pipeline(StandardScaler(), wl.NTKClassifier(SMALL))
    grid = GridSearchCV(pipe, {"ntkclassifier__kernel": ["ntk", "nngp"],
                               "ntkclassifier__diag_reg": [1e-4, 1e-1]}, cv=3)
    grid.fit(X[:300], y[:300])
    assert set(grid.best_params_) == {"ntkclassifier__kernel", "ntkclassifier__diag_reg"}
    assert grid.score(X[300:], y[300:]) > 0.9
    labels, std = grid.best_estimator_.predict(X[300:], return_std=True)
    assert labels.shape == std.shape == (100,) and (std >= 0).all()
    scores = grid.best_estimator_.decision_function(X[300:])
    assert scores.shape == (100, 10)


def test_invalid_parameters_raise_at_fit():
    X, y = np.random.default_rng(0).normal(size=(10, 3)), np.arange(10.0)
    for kw, name in (({"kernel": "rbf"}, "kernel"), ({"t": -1.0}, "t"), ({"diag_reg": -1.0}, "diag_reg"),
                     ({"learning_rate": 0.0}, "learning_rate"), ({"net": "mlp"}, "net")):
        with pytest.raises(ValueError, match=f"`{name}`"):
            wl.NTKRegressor(**kw).fit(X, y)
