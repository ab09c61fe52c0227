"""NTK / NNGP limits in the limits API against the kernel closed forms written out here."""
import numpy as np
import pytest
import torch

from widelimit import layers as L
from widelimit.limits import MuPLimitLinear1LP, NNGPLimit, NTKLimit

D, K, N = 6, 3, 10


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(2)
    return (torch.randn(N, D, dtype=torch.float64, generator=g),
            torch.randn(N, K, dtype=torch.float64, generator=g),
            torch.randn(4, D, dtype=torch.float64, generator=g))


def _flow(k_tt, k_tx, y, t):
    """Mean of kernel gradient flow on ||f - y||^2 / (2 N K) from f_0 = 0 at time t:
    f_t(x) = k_xX k^{-1} (I - exp(-t k / (N K))) y."""
    return k_tx @ torch.linalg.solve(k_tt, (torch.eye(N, dtype=torch.float64)
                                            - torch.linalg.matrix_exp(-t * k_tt / y.numel())) @ y)


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_linear_net_kernel_limits(data, kind):
    """Two Dense layers (NTK parametrization, no nonlinearity): NNGP = s^2 x.x'/d,
    NTK = 2 s^2 x.x'/d with s = W_std_1 W_std_2."""
    x, y, xs = data
    net = L.serial(L.Dense(512, W_std=1.3), L.Dense(K, W_std=0.7))
    s2 = (1.3 * 0.7) ** 2
    c = s2 / D * (2.0 if kind == "ntk" else 1.0)
    lim = (NTKLimit if kind == "ntk" else NNGPLimit)(net, diag_reg=1e-8)
    lr, steps = 0.5, 30
    lim.fit(x, y, lr, steps)
    k_tt = c * x @ x.T + 1e-8 * torch.eye(N, dtype=torch.float64) * (c * x @ x.T).diagonal().mean()
    expected = _flow(k_tt, c * xs @ x.T, y, lr * steps)
    assert torch.allclose(lim.predict(xs), expected, rtol=1e-8, atol=1e-10)
    assert lim.loss_curve_.shape == (steps + 1,)
    assert lim.loss_curve_[0] == pytest.approx(float((y ** 2).sum() / (2 * y.numel())), rel=1e-12)
    assert bool((lim.loss_curve_.diff() <= 1e-15).all())
    assert isinstance(lim.predict(xs.numpy()), np.ndarray)
    # N > d: the linear kernel is singular; gradient flow never moves along its null space,
    # which the test kernel does not see either, so the unregularised limit agrees
    with pytest.warns(UserWarning, match="singular"):
        plain = type(lim)(net).fit(x, y, lr, steps).predict(xs)
    assert torch.allclose(plain, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.filterwarnings("ignore:.*singular to working precision")
def test_matched_ntk_and_mup_agree_to_first_order_only(data):
    """With W_std chosen so that the NTK equals the muP limit's initial tangent kernel, the
    two limits agree at t -> 0 (difference O(lr^2)) and separate later (feature learning)."""
    x, y, xs = data
    mup = MuPLimitLinear1LP(D, K, base_width=4)
    c = float(mup.initial_ntk(x[:1], x[:1])[0, 0] / (x[0] @ x[0]))      # kernel = c x.x'
    net = L.serial(L.Dense(64, W_std=1.0), L.Dense(K, W_std=(c * D / 2) ** 0.5))
    diffs = []
    for lr in (0.02, 0.01):
        f_mup = mup.fit(x, y, lr, 1).predict(xs)
        f_ntk = NTKLimit(net).fit(x, y, lr, 1).predict(xs)
        diffs.append(float((f_mup - f_ntk).norm() / f_mup.norm()))
    assert diffs[1] < 0.6 * diffs[0] and diffs[0] < 0.05          # relative gap ~ lr
    f_mup = mup.fit(x, y, 1.0, 20).predict(xs)
    f_ntk = NTKLimit(net).fit(x, y, 1.0, 20).predict(xs)
    assert float((f_mup - f_ntk).norm() / f_mup.norm()) > 0.05


@pytest.mark.filterwarnings("ignore:.*singular to working precision")
def test_kernel_limit_bad_input(data):
    x, y, xs = data
    net = L.serial(L.Dense(64), L.Dense(K))
    with pytest.raises(ValueError, match="kind"):
        from widelimit.limits import KernelLimit
        KernelLimit(net, kind="mup")
    with pytest.raises(TypeError, match="net"):
        NTKLimit(3)
    lim = NTKLimit(net)
    with pytest.raises(RuntimeError, match="not fitted"):
        lim.predict(xs)
    with pytest.raises(ValueError, match="steps"):
        lim.fit(x, y, 0.1, -1)
    with pytest.raises(ValueError, match="one row per input"):
        lim.fit(x, y[:5], 0.1, 3)
    lim.fit(x, y, 0.1, 3)
    with pytest.raises(ValueError, match="feature shape"):
        lim.predict(xs[:, :4])
    assert lim.fit(x, y, 0.1, None).predict(xs).shape == (4, K)      # t = infinity
