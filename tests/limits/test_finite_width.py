"""Leading 1/width corrections of the NNGP (widelimit.limits.finite_width).

Quadrature against closed forms, the recursion against exact finite-width results (one
hidden layer; one input of a critical ReLU net), and Monte Carlo over real finite networks at
widths 32..512: n (E[f f^T] - K_inf) -> K_1 within Student-t bounds from the samples, and
K_inf + K_1 / n explains most of the gap to the infinite-width kernel.
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

import widelimit as wl
from widelimit import layers as L
from widelimit.kernels.rules.relu import _arccos_kernel
from widelimit.limits import (finite_width_nngp, gaussian_expectation, gaussian_pair_moments,
                              pair_jacobian_hessian, sample_output_gram)
from widelimit.limits.gaussian_quadrature import gauss_hermite_moment, pairs_of

F64 = torch.float64
WIDTHS = (32, 64, 128, 256, 512)
Z = 4.5          # per-entry bound in standard errors (two-sided p ~ 1e-5 before the t tails)


def mlp(depth, width=64, W=math.sqrt(2), b=0.1, phi=L.Relu, parameterization="ntk"):
    body = [layer for _ in range(depth)
            for layer in (L.Dense(width, W, b, parameterization=parameterization), phi())]
    return L.serial(*body, L.Dense(1, W, b, parameterization=parameterization))


def _cov(rng, n, d):
    a = torch.from_numpy(rng.standard_normal((n, d)))
    return a @ a.T / d


@pytest.fixture(scope="module")
def x():
    return torch.from_numpy(np.random.default_rng(0).standard_normal((4, 6)))


# ---------------------------------------------------------------- quadrature vs closed forms

def test_nested_quadrature_against_closed_forms():
    rng = np.random.default_rng(1)
    k2, k3, k4 = _cov(rng, 2, 3), _cov(rng, 3, 5), _cov(rng, 4, 6)
    relu_sq = _arccos_kernel(2, k2[0, 1], k2[0, 0], k2[1, 1])        # E[relu(u)^2 relu(v)^2]
    got = gaussian_expectation(lambda u: torch.relu(u) ** 2, k2)
    assert abs(float(got - relu_sq)) < 1e-13 * float(relu_sq)
    # 3-D orthant probability (a jump at 0): 1/8 + sum_{i<j} asin(rho_ij) / (4 pi)
    s = torch.sqrt(torch.diagonal(k3))
    rho = k3 / s[:, None] / s[None, :]
    orthant = 1 / 8 + float(torch.asin(rho[0, 1]) + torch.asin(rho[0, 2]) + torch.asin(rho[1, 2])) \
        / (4 * math.pi)
    assert abs(float(gaussian_expectation(lambda u: (u > 0).to(F64), k3)) - orthant) < 1e-10
    # Isserlis in 4-D for the identity
    m = gaussian_pair_moments(lambda u: u, k4)
    for i, (a, b) in enumerate(pairs_of(4)):
        for j, (c, d) in enumerate(pairs_of(4)):
            exact = k4[a, b] * k4[c, d] + k4[a, c] * k4[b, d] + k4[a, d] * k4[b, c]
            # exact for a polynomial; the 4-D sum of many nodes rounds to ~1e-12 relative
            assert abs(float(m[i, j] - exact)) < 1e-11 * max(1.0, abs(float(exact)))
    # 4-D ReLU with two independent blocks: a product of arc-cosine kernels
    blocks = torch.block_diag(k2, _cov(rng, 2, 3))
    m = gaussian_pair_moments(torch.relu, blocks)
    idx = {p: i for i, p in enumerate(pairs_of(4))}
    exact = _arccos_kernel(1, blocks[0, 1], blocks[0, 0], blocks[1, 1]) * \
        _arccos_kernel(1, blocks[2, 3], blocks[2, 2], blocks[3, 3])
    assert abs(float(m[idx[(0, 1)], idx[(2, 3)]] - exact)) < 1e-13
    # N > 4 inputs: one quadrature per set of 4, consistent with the 4-input result
    k5 = _cov(rng, 5, 7)
    m5 = gaussian_pair_moments(torch.relu, k5, 16)
    m4 = gaussian_pair_moments(torch.relu, k5[1:, 1:], 16)
    idx5 = {p: i for i, p in enumerate(pairs_of(5))}
    sub = [idx5[(a + 1, b + 1)] for a, b in pairs_of(4)]
    assert torch.allclose(m5[sub][:, sub], m4, rtol=1e-6, atol=0) and torch.allclose(m5, m5.T)
    # a coupled 4-D Gaussian: the log-normal moment E[prod exp(u_i / 2)] = exp(1^T K 1 / 8)
    got = gaussian_expectation(lambda u: torch.exp(u / 2), k4)
    assert abs(float(got / torch.exp(k4.sum() / 8)) - 1) < 1e-13
    # an independent rule: Gauss-Hermite (40^4 nodes) for erf, to its own accuracy (5e-5)
    got = gaussian_expectation(torch.erf, k4)
    assert abs(float(got / gauss_hermite_moment(torch.erf, k4, 40)) - 1) < 2e-4
    # ... and for ReLU, where Gauss-Hermite creeps towards it (relative error 8.6e-3 at 20^4
    # nodes, 6.1e-3 at 40^4, 5.4e-3 at 50^4: the kinks cost it its spectral convergence)
    got = gaussian_expectation(torch.relu, k4)
    e20, e40 = (abs(float(got - gauss_hermite_moment(torch.relu, k4, m))) for m in (20, 40))
    assert e40 < 1e-2 * float(got) and e40 < 0.8 * e20
    assert abs(float(got - gaussian_expectation(torch.relu, k4, 8))) > 1e-6   # m matters
    assert abs(float(got - gaussian_expectation(torch.relu, k4, 24))) < 1e-11 * float(got)


def test_pair_derivatives_closed_form_vs_quadrature():
    """ReLU's dual (closed form) and its polar quadrature give the same g, J, H; Price's
    theorem gives dg_ab/dK_ab = E[relu' relu'] = (pi - theta) / (2 pi) and
    d^2 g_ab / dK_ab^2 = E[delta(u) delta(v)] = 1 / (2 pi sqrt(det))."""
    k = _cov(np.random.default_rng(2), 3, 5)
    g, jac, hes = pair_jacobian_hessian(L.Relu(), k)
    g2, jac2, hes2 = pair_jacobian_hessian(L.Elementwise(torch.relu), k)
    for a, b in ((g, g2), (jac, jac2), (hes, hes2)):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
    idx = {p: i for i, p in enumerate(pairs_of(3))}
    p = idx[(0, 2)]
    v1, v2, c = k[0, 0], k[2, 2], k[0, 2]
    theta = torch.arccos(c / torch.sqrt(v1 * v2))
    assert abs(float(jac[p, p] - (math.pi - theta) / (2 * math.pi))) < 1e-14
    assert abs(float(hes[p, p, p] - 1 / (2 * math.pi * torch.sqrt(v1 * v2 - c * c)))) < 1e-12
    assert abs(float(jac[idx[(1, 1)], idx[(1, 1)]]) - 0.5) < 1e-14     # E[relu^2] = K / 2
    assert float(hes[idx[(1, 1)]].abs().max()) < 1e-14
    # a smooth nonlinearity: erf closed form vs quadrature
    erf_quad = pair_jacobian_hessian(L.Elementwise(torch.erf), k)
    for a, b in zip(pair_jacobian_hessian(L.Erf(), k), erf_quad):
        assert torch.allclose(a, b, atol=1e-11, rtol=0)


# ---------------------------------------------------------------- exact finite-width results

def test_one_hidden_layer_is_exact(x):
    """One hidden layer: E[f f^T] = K_inf exactly (K_1 = 0) and Cov(G) = V / n at every width,
    V = C_W^2 (E[s_p s_q] - g_p g_q); the ReLU entries with two inputs are arc-cosine kernels of
    degree 2 (Cho & Saul 2009)."""
    net = mlp(1)
    k_inf, k_1, v = finite_width_nngp(net, x, get=("nngp", "correction", "four_point"))
    assert float(k_1.abs().max()) == 0.0
    k0 = 2 * x @ x.T / x.shape[1] + 0.01
    g = _arccos_kernel(1, k0, torch.diagonal(k0)[:, None], torch.diagonal(k0)[None, :])
    d2 = _arccos_kernel(2, k0, torch.diagonal(k0)[:, None], torch.diagonal(k0)[None, :])
    assert torch.allclose(k_inf, 0.01 + 2 * g, rtol=1e-13)
    gd = torch.diagonal(g)
    # V_(aa)(bb) = 4 (E[relu_a^2 relu_b^2] - g_aa g_bb); V_(ab)(ab) = 4 (E[..] - g_ab^2)
    outer = gd[:, None] * gd[None, :]
    assert torch.allclose(torch.einsum("aabb->ab", v), 4 * (d2 - outer), rtol=1e-10)
    assert torch.allclose(torch.einsum("abab->ab", v), 4 * (d2 - g * g), rtol=1e-10)
    n, s = 32, 20000
    samples = sample_output_gram(net, x, s, n, seed=4, batch=2000)
    flat = samples.reshape(s, -1)
    cov = torch.cov(flat.T) * n                                     # n Cov(G_ab, G_cd)
    se = (flat - flat.mean(0)).T.pow(2) @ (flat - flat.mean(0)).pow(2) / s
    se = (se - (cov / n) ** 2).clamp(min=0).sqrt() / math.sqrt(s) * n
    err = (cov - v.reshape(16, 16)).abs()
    assert torch.all(err <= Z * se + 1e-12), float((err / se).max())
    mean_err = (samples.mean(0) - k_inf).abs()
    assert torch.all(mean_err <= Z * samples.std(0) / math.sqrt(s))


def test_single_input_relu_at_criticality():
    """C_W = 2, no bias: V^(l) = 5 (l - 1) K^2 (the book's ReLU result), K_1 = 0, and exactly
    at every width E[G^2] = K^2 (1 + 5/n)^L, since E[(2/n sum relu_j^2)^2 | G] = G^2 (1 + 5/n)."""
    x1 = torch.tensor([[0.3, -1.2, 0.8]], dtype=F64)
    for depth in (1, 2, 4):
        net = mlp(depth, b=None)
        k, k_1, v = finite_width_nngp(net, x1, get=("nngp", "correction", "four_point"))
        assert float(k_1.abs().max()) < 1e-15
        assert abs(float(v.flatten()[0] / k.flatten()[0] ** 2) - 5 * depth) < 1e-9
    n, s, depth = 64, 4000, 4
    samples = sample_output_gram(mlp(depth, b=None), x1, s, n, seed=5, batch=500)[:, 0, 0]
    k = float(k.flatten()[0])
    second = samples.pow(2)
    exact = k ** 2 * (1 + 5 / n) ** depth
    assert abs(float(second.mean()) - exact) <= Z * float(second.std()) / math.sqrt(s)
    assert abs(float(samples.mean()) - k) <= Z * float(samples.std()) / math.sqrt(s)


def test_relu_diagonal_has_no_correction(x):
    """E[relu(u)^2 | G] = G_aa / 2 is linear, so E[G_aa] is exact at every width."""
    _, k_1 = finite_width_nngp(mlp(4), x)
    assert float(torch.diagonal(k_1).abs().max()) < 1e-13
    assert float(k_1.abs().max()) > 0.1


# ---------------------------------------------------------------- Monte Carlo over widths

def _check_widths(net, x, samples_per_width, b_next):
    """Per width: |n (MC - K_inf) - K_1| <= Z n SE + b_next / n entrywise (b_next: the next
    order K_2 / n^2 allowance), and K_1 / n explains >= 70 % of the gap (Frobenius norm)."""
    k_inf, k_1 = finite_width_nngp(net, x)
    explained = {}
    for n in WIDTHS:
        s = samples_per_width[n]
        g = sample_output_gram(net, x, s, n, seed=n, control_variates=True, batch=128)
        mean, se = g.mean(0), g.std(0) / math.sqrt(s)
        z = float(stats.t.ppf(1 - 0.5e-5, s - 1))
        err = ((mean - k_inf) * n - k_1).abs()
        tol = z * n * se + b_next / n
        assert torch.all(err <= tol), f"width {n}: max err/tol {float((err / tol).max()):.2f}"
        gap = (mean - k_inf).norm()
        explained[n] = 1 - float((mean - k_inf - k_1 / n).norm() / gap)
        assert explained[n] > 0.7, explained
    return explained


def test_monte_carlo_relu_widths(x):
    """Depth-3 ReLU MLP, 4 inputs: measured (control-variate MC) vs K_1 at widths 32..512;
    K_1 / n explains 0.8-0.95 of |MC - K_inf| (measured with these seeds)."""
    counts = {32: 1024, 64: 1024, 128: 1024, 256: 512, 512: 256}
    _check_widths(mlp(3), x, counts, b_next=4.0)


def test_monte_carlo_plain_estimator_at_width_32(x):
    """Without control variates (the plain mean of E[f f^T | hidden layers] over 40000 nets):
    the same correction, within its (larger) standard error."""
    net, n, s = mlp(3), 32, 40000
    k_inf, k_1 = finite_width_nngp(net, x)
    g = sample_output_gram(net, x, s, n, seed=7, batch=4000)
    mean, se = g.mean(0), g.std(0) / math.sqrt(s)
    err = ((mean - k_inf) * n - k_1).abs()
    assert torch.all(err <= Z * n * se + 4.0 / n), float((err / (n * se)).max())
    off = ~torch.eye(4, dtype=torch.bool)
    assert float((mean - k_inf - k_1 / n)[off].norm() / (mean - k_inf)[off].norm()) < 0.3


@pytest.mark.slow
def test_monte_carlo_tanh_standard_parametrization(x):
    """Any phi through its dual: tanh (polar quadrature), standard parametrization (the same
    forward distribution), where the diagonal is corrected too."""
    net = mlp(3, W=1.5, phi=L.Tanh, parameterization="standard")
    k_1 = finite_width_nngp(net, x, get="correction")
    assert float(torch.diagonal(k_1).abs().min()) > 0.05
    _check_widths(net, x, {32: 512, 64: 512, 128: 512, 256: 512, 512: 384}, b_next=4.0)


@pytest.mark.slow
def test_sampler_matches_widelimit_modules(x):
    """The batched sampler and widelimit's own finite modules (wl.monte_carlo_kernel_fn, width
    32, 64 readout units) estimate the same E[f f^T]."""
    net, n, s = mlp(2), 32, 1500
    mc = wl.monte_carlo_kernel_fn(L.serial(*net.layers[:-1], L.Dense(64, math.sqrt(2), 0.1)),
                                  s, width=n, seed=1)(x, get="nngp", return_samples=True)
    ours = sample_output_gram(net, x, 4 * s, n, seed=2, batch=1000)
    diff = (mc.mean(0) - ours.mean(0)).abs()
    se = (mc.var(0) / s + ours.var(0) / (4 * s)).sqrt()
    assert torch.all(diff <= Z * se), float((diff / se).max())


def test_example_runs(tmp_path):
    """examples/finite_width.py at two widths (its plot is docs/img/finite_width.png)."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "finite_width.py")
    spec = importlib.util.spec_from_file_location("finite_width_example", path)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    res = ex.run(str(tmp_path), widths=(32, 64), n_nets=256)
    assert all(res["explained"][n] > 0.7 for n in (32, 64)), res["explained"]
    assert os.path.getsize(res["plot"]) > 10_000


def test_kernel_output_and_numpy(x):
    net = mlp(2, width=128)
    k_inf, k_1, kern, c4 = finite_width_nngp(net, x.numpy(), get=("nngp", "correction", "kernel",
                                                                   "cumulant4"))
    assert isinstance(kern, np.ndarray) and kern.shape == (4, 4)
    np.testing.assert_allclose(kern, k_inf + k_1 / 128, rtol=1e-14)
    np.testing.assert_allclose(k_inf, np.asarray(net.kernel_fn(x, get="nngp")), rtol=1e-12)
    assert np.allclose(c4, c4.transpose(1, 0, 2, 3)) and np.allclose(c4, c4.transpose(2, 3, 0, 1))
    assert np.allclose(c4, c4.transpose(0, 2, 1, 3))                  # fully symmetric
    single = finite_width_nngp(net, x, 64, get="kernel")
    assert torch.allclose(single, torch.from_numpy(k_inf + k_1 / 64))


def test_bad_input(x):
    with pytest.raises(ValueError, match="alternate Dense"):
        finite_width_nngp(L.serial(L.Dense(8), L.Dense(1)), x)
    with pytest.raises(TypeError, match="widelimit layer"):
        finite_width_nngp(torch.nn.Linear(2, 2), x)
    with pytest.raises(ValueError, match="`get`"):
        finite_width_nngp(mlp(2), x, get="ntk")
    with pytest.raises(ValueError, match="N <= 8"):
        finite_width_nngp(mlp(2), torch.randn(9, 3, dtype=F64))
    with pytest.raises(ValueError, match="positive definite"):
        finite_width_nngp(mlp(2, b=None), torch.cat([x[:2], 2 * x[:1]]))
    with pytest.raises(ValueError, match="widths .* differ"):
        finite_width_nngp(L.serial(L.Dense(8), L.Relu(), L.Dense(16), L.Relu(), L.Dense(1)), x,
                          get="kernel")
    with pytest.raises(ValueError, match="width"):
        finite_width_nngp(mlp(2), x, 0, get="kernel")
    with pytest.raises(ValueError, match="n_nets"):
        sample_output_gram(mlp(2), x, 0)
