"""Depth limit of 1/sqrt(depth)-scaled residual ReLU networks (widelimit.limits.depth).

Analytic finite-depth kernels (the library's layer rules) against the layer-time ODE
dK/dt = alpha^2 F(K), dTh/dt = alpha^2 (F(K) + F'(K) Th) (scipy DOP853, float64), its
diagonal closed form, and Monte Carlo over finite networks.
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

import widelimit as wl
from widelimit.limits import depth_limit_kernel, residual_block, scaled_resnet
from widelimit import layers as L

ALPHA = 1.3


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((5, 7))


@pytest.fixture(scope="module")
def limit(x):
    return depth_limit_kernel(x, alpha=ALPHA)


def _kernels(depth, x, **kw):
    out = scaled_resnet(depth, alpha=ALPHA, **kw).kernel_fn(x, get=("nngp", "ntk"))
    return {"nngp": np.asarray(out.nngp), "ntk": np.asarray(out.ntk)}


def test_limit_diagonal_closed_form(x, limit):
    k0 = np.sum(x * x, 1) / x.shape[1]
    e = math.exp(ALPHA ** 2 / 2)
    np.testing.assert_allclose(np.diag(limit["nngp"]), k0 * e, rtol=1e-9)
    np.testing.assert_allclose(np.diag(limit["ntk"]), k0 * e * (2 + ALPHA ** 2 / 2), rtol=1e-9)
    for name in ("nngp", "ntk"):
        k = limit[name]
        assert np.allclose(k, k.T, atol=1e-12) and np.linalg.eigvalsh(k).min() > 0


def test_finite_depth_diagonal_is_compound_growth(x):
    k0 = np.sum(x * x, 1) / x.shape[1]
    for depth in (10, 1000):
        k = _kernels(depth, x)["nngp"]
        np.testing.assert_allclose(np.diag(k), k0 * (1 + ALPHA ** 2 / (2 * depth)) ** depth,
                                   rtol=1e-10)


def test_kernels_converge_like_one_over_depth(x, limit):
    """Depth 10..1000 stay finite; the error to the ODE (and |K_L - K_2L|) shrinks like 1/L:
    measured L * error -> 0.357 (NNGP), 0.607 (NTK), relative to max |K|."""
    depths = (10, 20, 40, 80, 160, 1000)
    ks = {d: _kernels(d, x) for d in depths}
    for name in ("nngp", "ntk"):
        scale = np.abs(limit[name]).max()
        errs = [np.abs(ks[d][name] - limit[name]).max() / scale for d in depths]
        assert all(np.isfinite(ks[d][name]).all() for d in depths)
        assert all(a > b for a, b in zip(errs, errs[1:]))
        lerr = [e * d for e, d in zip(errs, depths)]
        assert max(lerr) / min(lerr) < 1.15, lerr           # Euler: error ~ C / L
        assert errs[-1] < 1e-3
        gaps = [np.abs(ks[d][name] - ks[2 * d][name]).max() / scale for d in (10, 20, 40, 80)]
        ratios = [a / b for a, b in zip(gaps, gaps[1:])]
        assert all(1.8 < r < 2.2 for r in ratios), ratios    # halves when the depth doubles


def test_cross_kernel_and_tensor_io(x):
    a, b = x[:3], x[3:]
    full = depth_limit_kernel(x, alpha=ALPHA, get="ntk")
    cross = depth_limit_kernel(torch.from_numpy(a), torch.from_numpy(b), alpha=ALPHA, get="ntk")
    assert isinstance(cross, torch.Tensor) and cross.dtype == torch.float64
    np.testing.assert_allclose(cross.numpy(), full[:3, 3:], rtol=1e-8)


@pytest.mark.slow
def test_monte_carlo_finite_networks(x):
    """Finite depth-8 networks at width 512: the analytic kernel within Z standard errors plus
    an O(1/width) bias allowance (as tests/test_monte_carlo.py)."""
    torch_x = torch.from_numpy(x[:4])
    width, b = 512, 4.0
    for kind, readout, n in (("nngp", 256, 32), ("ntk", 4, 8)):
        net = scaled_resnet(8, width, alpha=ALPHA, out_dim=readout)
        a = net.kernel_fn(torch_x, get=kind)
        s = wl.monte_carlo_kernel_fn(net, n, seed=5)(torch_x, get=kind, return_samples=True)
        se = s.std(0) / n ** 0.5
        z = float(stats.t.ppf(1 - 0.5e-4, n - 1))
        err = (s.mean(0) - a).abs()
        tol = z * se + (b / width) * a.abs()
        assert torch.all(err <= tol), f"{kind}: max err/tol {float((err / tol).max()):.2f}"
        # and the check is sharp: a kernel without the 1/sqrt(depth) factor is far outside
        wrong = scaled_resnet(8, width, alpha=ALPHA * math.sqrt(8), out_dim=readout)
        assert not torch.all((s.mean(0) - wrong.kernel_fn(torch_x, get=kind)).abs() <= tol)


def test_bad_input(x):
    with pytest.raises(ValueError, match="depth"):
        scaled_resnet(0)
    with pytest.raises(ValueError, match="alpha"):
        scaled_resnet(4, alpha=float("nan"))
    with pytest.raises(ValueError, match="`get`"):
        depth_limit_kernel(x, get="cov")
    with pytest.raises(ValueError, match="same d"):
        depth_limit_kernel(x, x[:, :3])
    with pytest.raises(ValueError, match="ending in Dense"):
        residual_block(L.serial(L.Dense(8), L.Relu()), 0.5)
    with pytest.raises(TypeError, match="widelimit layer"):
        residual_block(torch.nn.Linear(2, 2))
