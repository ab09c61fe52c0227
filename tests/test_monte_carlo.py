"""Analytic kernels vs Monte Carlo over real finite networks built from the same spec.

Tolerance per entry, derived from the samples rather than tuned:
    |MC mean - analytic| <= Z * stderr + (B / width) * |analytic|
stderr = sample std / sqrt(n_samples) (the MC error, ~1/sqrt(width x n_samples));
Z = the Student-t quantile for n_samples - 1 degrees of freedom at two-sided
p = 1e-4 per entry (the stderr is itself estimated from the samples; < 1% family-wise
over the ~30 entries of an architecture); B / width bounds the O(1/width) finite-width bias of the
expected empirical kernel (B = 4). A wrong rule (e.g. a missing factor 1/2 in ReLU,
a dropped bias, the other parametrization) is many standard errors off and fails.
"""
import pytest
import torch
from scipy import stats

import widelimit as wl
from widelimit import layers as L


pytestmark = pytest.mark.usefixtures("float64_default")
WIDTH, B = 512, 4.0
SAMPLES = {"nngp": 64, "ntk": 16}   # an NNGP sample is a forward pass: cheap


def _d(width=WIDTH, **kw):
    return L.Dense(width, **kw)


ARCHS = {  # o: readout size (many outputs make the NNGP estimate sharp; the NTK needs few)
    "relu_ntk": lambda o: L.serial(_d(W_std=1.5, b_std=0.1), L.Relu(), _d(o, W_std=1.2, b_std=0.2)),
    "relu_standard": lambda o: L.serial(_d(W_std=1.5, b_std=0.1, parameterization="standard"), L.Relu(),
                                      _d(o, W_std=1.2, b_std=0.2, parameterization="standard")),
    "erf": lambda o: L.serial(_d(W_std=1.3, b_std=0.2), L.Erf(a=1.1, b=0.8, c=0.2), _d(o, W_std=1.0, b_std=0.1)),
    "gelu": lambda o: L.serial(_d(W_std=1.3, b_std=0.2), L.Gelu(), _d(o, W_std=1.0, b_std=0.1)),
    "abrelu": lambda o: L.serial(_d(W_std=1.3, b_std=0.2), L.ABRelu(-0.4, 1.2), _d(o, W_std=1.0, b_std=0.1)),
    "layernorm": lambda o: L.serial(_d(W_std=1.5, b_std=0.3), L.LayerNorm(), L.Relu(), _d(o, W_std=1.0, b_std=0.1)),
    "tanh_quadrature": lambda o: L.serial(_d(W_std=1.5, b_std=0.1), L.Tanh(), _d(o, W_std=1.0, b_std=0.1)),
    "residual": lambda o: L.serial(
        _d(W_std=1.4, b_std=0.1), L.FanOut(2),
        L.parallel(L.serial(L.Relu(), _d(W_std=1.3, b_std=0.1)), L.Identity()), L.FanInSum(),
        L.Relu(), _d(o, W_std=1.0, b_std=0.1)),
    "deep_relu_standard": lambda o: L.serial(
        _d(W_std=1.4, b_std=0.1, parameterization="standard"), L.Relu(),
        _d(W_std=1.4, b_std=0.1, parameterization="standard"), L.Relu(),
        _d(16, W_std=1.0, b_std=0.1, parameterization="standard")),
}


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(7)
    x1 = torch.randn(5, 6, generator=g, dtype=torch.float64)
    x2 = torch.randn(3, 6, generator=g, dtype=torch.float64)
    x2[0] = x1[0]
    return x1, x2


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_analytic_matches_monte_carlo(name, data):
    x1, x2 = data
    for kind, readout in (("nngp", 1024), ("ntk", 16)):
        net = ARCHS[name](readout)
        a = net.kernel_fn(x1, x2, get=kind)
        n = SAMPLES[kind]
        s = wl.monte_carlo_kernel_fn(net, n, seed=11)(x1, x2, get=kind, return_samples=True)
        assert s.shape == (n, 5, 3)
        se = s.std(0) / n ** 0.5
        z = float(stats.t.ppf(1 - 0.5e-4, n - 1))
        err = (s.mean(0) - a).abs()
        tol = z * se + (B / WIDTH) * a.abs()
        assert torch.all(err <= tol), f"{kind}: max err/tol {float((err / tol).max()):.2f}"


def test_monte_carlo_error_shrinks_with_width(data):
    """The MC estimate's error falls roughly like 1/sqrt(width)."""
    x1, _ = data
    net = L.serial(_d(W_std=1.5, b_std=0.1), L.Erf(), _d(32, W_std=1.0, b_std=0.1))
    exact = net.kernel_fn(x1, get="ntk")
    errs = []
    for width in (32, 2048):
        mc = wl.monte_carlo_kernel_fn(net, 8, width=width, seed=3)(x1, get="ntk")
        errs.append(float((mc - exact).norm() / exact.norm()))
    assert errs[1] < errs[0] / 3        # sqrt(2048 / 32) = 8 expected; 3 leaves room for noise


def test_monte_carlo_api(data):
    x1, x2 = data
    net = ARCHS["erf"](8)
    fn = wl.monte_carlo_kernel_fn(net, 2, width=64)
    assert fn(x1, get="nngp").shape == (5, 5)
    out = fn(x1.numpy(), x2.numpy(), get=("ntk",))
    assert out.ntk.shape == (5, 3) and type(out.ntk).__module__ == "numpy"
    with pytest.raises(ValueError, match="n_samples"):
        wl.monte_carlo_kernel_fn(net, 0)
    with pytest.raises(TypeError, match="widelimit layer"):
        wl.monte_carlo_kernel_fn(torch.nn.Linear(2, 2), 4)
    with pytest.raises(ValueError, match="`get`"):
        fn(x1, get=None)
