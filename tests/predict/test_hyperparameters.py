"""fit_hyperparameters recovers W_std, b_std of the NNGP that generated the data."""
import math

import pytest
import torch

import widelimit as wl
from widelimit import layers as L
from widelimit.hyperparameters import negative_log_marginal_likelihood


def relu_net(w, b):
    return L.serial(L.Dense(1, W_std=w, b_std=b), L.Relu(), L.Dense(1, W_std=w, b_std=b), L.Relu(),
                    L.Dense(1, W_std=w, b_std=b))


def test_recovers_known_hyperparameters():
    """100 inputs, 20 independent GP draws from the depth-2 ReLU NNGP with W_std=1.3,
    b_std=0.4 (+1e-4 noise); fit from (1.0, 0.1).  Measured: 1.303, 0.408.  Tolerance:
    5% on W_std, 10% on b_std."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 3, generator=g, dtype=torch.float64)
    k = relu_net(1.3, 0.4).kernel_fn(x, None, get="nngp") + 1e-4 * torch.eye(100, dtype=torch.float64)
    y = torch.linalg.cholesky(k) @ torch.randn(100, 20, generator=g, dtype=torch.float64)
    fit = wl.fit_hyperparameters(relu_net(1.0, 0.1), x, y, steps=400, lr=0.05)
    assert fit.values["W_std"] == pytest.approx(1.3, rel=0.05)
    assert fit.values["b_std"] == pytest.approx(0.4, rel=0.10)
    assert fit.converged and fit.loss_history[-1] < fit.loss_history[0]
    dense = [layer for layer in fit.net.walk() if isinstance(layer, L.Dense)]
    assert all(layer.W_std == fit.values["W_std"] for layer in dense)
    # the fitted net's likelihood is at least that of the truth (it is the maximiser)
    k_fit = fit.net.kernel_fn(x, None, get="nngp")
    nll_fit = negative_log_marginal_likelihood(k_fit, y, 1e-4)
    nll_true = negative_log_marginal_likelihood(k - 1e-4 * torch.eye(100, dtype=torch.float64), y, 1e-4)
    assert float(nll_fit) <= float(nll_true) + 1e-6


def test_noise_and_errors():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 2, generator=g, dtype=torch.float64)
    y = torch.sin(3 * x[:, 0]) + 0.3 * torch.randn(40, generator=g, dtype=torch.float64)
    fit = wl.fit_hyperparameters(relu_net(1.0, 0.1), x, y, params=("W_std", "noise"), steps=150,
                                 lr=0.1, noise=1e-2)
    assert set(fit.values) == {"W_std", "noise"}
    assert 0.01 < fit.values["noise"] < 0.3 and math.isfinite(fit.loss_history[-1])
    with pytest.raises(ValueError, match="`params`"):
        wl.fit_hyperparameters(relu_net(1.0, 0.1), x, y, params=("depth",))
    with pytest.raises(ValueError, match="`y`"):
        wl.fit_hyperparameters(relu_net(1.0, 0.1), x, y[:10])
    with pytest.raises(ValueError, match="`steps`"):
        wl.fit_hyperparameters(relu_net(1.0, 0.1), x, y, steps=0)
