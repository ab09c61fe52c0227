"""The infinite-width muP limit of the one-hidden-layer linear network.

Checks: (1) the coefficient recursion driven by a finite network's own Gram matrix
reproduces that network's SGD trajectory exactly (float64); (2) finite muP networks
(``wl.parametrize``) converge to the limit like width^{-1/2}; (3) the first step equals
the hand-derived closed form; (4) bad input.
"""
import math

import numpy as np
import pytest
import torch

import widelimit as wl
from widelimit.limits import (DivergenceError, MuPLimitLinear1LP, batch_schedule, initial_gram,
                              mup_linear_1lp, train_sgd)

D, K, N, BASE = 6, 3, 10, 4


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(N, D, dtype=torch.float64, generator=g),
            torch.randn(N, K, dtype=torch.float64, generator=g))


@pytest.mark.parametrize("batch_size", [None, 4])
def test_recursion_is_exact_at_finite_width(data, batch_size):
    x, y = data
    model = mup_linear_1lp(D, K, 96, BASE, seed=5, dtype=torch.float64)
    exact = MuPLimitLinear1LP(D, K, base_width=BASE).fit(x, y, 0.8, 7, batch_size, seed=3,
                                                         gram=initial_gram(model, BASE))
    losses = train_sgd(model, x, y, 0.8, 7, batch_size, seed=3)
    with torch.no_grad():
        out = model(x)
    assert torch.allclose(out, exact.predict(x), rtol=0, atol=1e-12)
    assert torch.allclose(losses, exact.loss_curve_, rtol=0, atol=1e-12)
    assert losses[-1] < 0.6 * losses[0]          # it really trained


@pytest.mark.parametrize("batch_size", [None, 5])
def test_finite_mup_networks_converge_to_the_limit(data, batch_size):
    """RMS over 8 seeds of ||f_n - f_inf|| / ||f_inf|| after 6 SGD steps; measured
    (full batch) 0.017, 0.012, 0.0047 at widths 256, 1024, 4096, slope -0.47."""
    x, y = data
    lr, steps = 1.0, 6
    lim = MuPLimitLinear1LP(D, K, base_width=BASE).fit(x, y, lr, steps, batch_size, seed=2)
    f_inf = lim.predict(x)
    assert lim.loss_curve_[-1] < 0.4 * lim.loss_curve_[0]     # far from the first-order regime
    widths, errs = [256, 1024, 4096], []
    for w in widths:
        e = []
        for s in range(8):
            m = mup_linear_1lp(D, K, w, BASE, seed=100 + s, dtype=torch.float64)
            train_sgd(m, x, y, lr, steps, batch_size, seed=2)
            with torch.no_grad():
                e.append(float((m(x) - f_inf).norm() / f_inf.norm()))
        errs.append(math.sqrt(np.mean(np.square(e))))
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.02, errs
    slope = np.polyfit(np.log(widths), np.log(errs), 1)[0]
    assert -0.8 < slope < -0.3, (slope, errs)


def test_first_step_closed_form(data):
    """f_1(x) = (eta_v s_u + eta_u s_v) / (B K) sum_{i in batch} y_i <x_i, x>, with
    s_u = input_var/d, s_v = b output_var, eta_u = lr/b, eta_v = lr b (module docstring)."""
    x, y = data
    xt = torch.randn(7, D, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    lr, b, iv, ov = 0.37, 8, 0.9, 1.7
    for bs in (None, 3):
        lim = MuPLimitLinear1LP(D, K, base_width=b, input_var=iv, output_var=ov)
        lim.fit(x, y, lr, 1, batch_size=bs, seed=4)
        idx = batch_schedule(N, 1, bs, seed=4)[0]
        c = (lr * b * iv / D + lr / b * b * ov) / (len(idx) * K)
        expected = c * (xt @ x[idx].T) @ y[idx]
        assert torch.allclose(lim.predict(xt), expected, rtol=0, atol=1e-10 * expected.abs().max())
        assert lim.loss_curve_[0] == pytest.approx(float((y ** 2).sum() / (2 * N * K)), rel=1e-14)
        # the same step as one step of kernel gradient descent with the initial tangent kernel
        k = lim.initial_ntk(xt, x[idx], lr)
        assert torch.allclose(k @ y[idx] / (len(idx) * K), expected, rtol=0, atol=1e-12)


def test_features_move_in_the_limit(data):
    x, y = data
    lim = MuPLimitLinear1LP(D, K, base_width=BASE).fit(x, y, 1.0, 6)
    k0 = (1 / 3) / D * x @ x.T
    rel = float((lim.feature_kernel(x) - k0).norm() / k0.norm())
    assert rel > 0.1                    # Theta(1) feature learning at infinite width
    assert torch.allclose(lim.weight_, lim.coef_.weight())


def test_numpy_in_numpy_out(data):
    x, y = data
    lim = MuPLimitLinear1LP(D, K).fit(x.numpy(), y.numpy(), 0.5, 3)
    out = lim.predict(x.numpy())
    assert isinstance(out, np.ndarray) and out.shape == (N, K)
    assert np.allclose(out, MuPLimitLinear1LP(D, K).fit(x, y, 0.5, 3).predict(x).numpy(), atol=1e-15)


@pytest.mark.parametrize("scheme", ["sp", "ntk"])
def test_non_mup_scheme_rejected(scheme):
    with pytest.raises(ValueError, match="no feature-learning"):
        MuPLimitLinear1LP(D, K, scheme=scheme)
    with pytest.raises(ValueError, match="unknown scheme"):
        MuPLimitLinear1LP(D, K, scheme="mupp")
    MuPLimitLinear1LP(D, K, scheme="mf")          # identical to muP for one hidden layer


def test_divergent_learning_rate_is_reported(data):
    x, y = data
    lim = MuPLimitLinear1LP(D, K, base_width=BASE)
    with pytest.raises(DivergenceError, match=r"diverged at lr=50.*stability bound") as info:
        lim.fit(x, y, 50.0, 200)
    err = info.value
    assert err.lr == 50.0 and 1 <= err.step <= 200 and len(err.losses) == err.step + 1
    assert all(math.isfinite(v) for v in err.losses[:-1])
    with pytest.raises(RuntimeError, match="not fitted"):      # no NaN state was kept
        lim.predict(x)
    assert isinstance(err, ValueError)


def test_bad_inputs(data):
    x, y = data
    lim = MuPLimitLinear1LP(D, K)
    with pytest.raises(ValueError, match=r"`x` must have shape \(N, 6\)"):
        lim.fit(x[:, :5], y, 0.1, 2)
    with pytest.raises(ValueError, match=r"`y` must have shape \(10, 3\)"):
        lim.fit(x, y[:, :2], 0.1, 2)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        lim.fit(bad, y, 0.1, 2)
    bad[0, 0] = float("inf")
    lim.fit(x, y, 0.1, 2)
    with pytest.raises(ValueError, match="NaN or inf"):
        lim.predict(bad)
    with pytest.raises(ValueError, match=r"`x` must have shape \(N, 6\)"):
        lim.predict(torch.randn(3, 7, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        lim.predict(torch.ones(3, D, dtype=torch.int64))
    for kw, msg in (({"lr": -1.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"steps": 1.5}, "steps"),
                    ({"batch_size": 0}, "batch_size"), ({"batch_size": N + 1}, "batch_size")):
        args = {"lr": 0.1, "steps": 2, **kw}
        with pytest.raises(ValueError, match=msg):
            lim.fit(x, y, **args)
    with pytest.raises(ValueError, match="d_in"):
        MuPLimitLinear1LP(0, K)
    with pytest.raises(ValueError, match="input_var"):
        MuPLimitLinear1LP(D, K, input_var=0.0)


def test_finite_builder_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = mup_linear_1lp(D, K, 32, BASE, seed=1)
    assert torch.equal(state, torch.get_rng_state())
    b = mup_linear_1lp(D, K, 32, BASE, seed=1)
    assert torch.equal(a[1].weight, b[1].weight)
    assert wl.get_registry(a).scheme.name == "mup"
    with pytest.raises(ValueError, match="base_width <= width"):
        mup_linear_1lp(D, K, 2, BASE)


def test_zero_initialised_readout(data):
    """readout_zero_init: V_0 = 0, the limit has output_var = 0; the recursion stays exact
    and the finite nets converge (here f_0 = 0 at every width, so the error is smaller)."""
    x, y = data
    lim = MuPLimitLinear1LP(D, K, base_width=BASE, output_var=0.0).fit(x, y, 1.0, 6)
    errs = []
    for w in (256, 4096):
        m = mup_linear_1lp(D, K, w, BASE, seed=7, dtype=torch.float64, readout_zero_init=True)
        assert float(m[1].weight.detach().abs().max()) == 0.0
        exact = MuPLimitLinear1LP(D, K, base_width=BASE, output_var=0.0).fit(
            x, y, 1.0, 6, gram=initial_gram(m, BASE))
        train_sgd(m, x, y, 1.0, 6)
        with torch.no_grad():
            out = m(x)
        assert torch.allclose(out, exact.predict(x), rtol=0, atol=1e-12)
        errs.append(float((out - lim.predict(x)).norm() / lim.predict(x).norm()))
    assert errs[1] < 0.5 * errs[0] and errs[1] < 0.01, errs
    with pytest.raises(ValueError, match=r"`gram` must be a \(9, 9\)"):
        lim.fit(x, y, 1.0, 2, gram=torch.eye(4, dtype=torch.float64))
