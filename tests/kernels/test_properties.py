"""Symmetry, positive semi-definiteness, diagonal consistency, dtypes, gradients."""
import numpy as np
import pytest
import torch
from architectures import ARCHITECTURES

import widelimit as wl
from widelimit import layers as L

SKIP_PSD = {"expnormalized"}  # a kernel map, not the covariance of a finite network


def _x(n=9, d=6, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_symmetric_psd_and_diagonal(name):
    net = ARCHITECTURES[name](L)
    x = _x()
    k = net.kernel_fn(x)
    assert isinstance(k, wl.Kernel) and k.x1_is_x2
    for mat in (k.nngp, k.ntk):
        torch.testing.assert_close(mat, mat.T, rtol=1e-12, atol=1e-12)
        if name not in SKIP_PSD:
            ev = torch.linalg.eigvalsh(mat)
            assert ev.min() >= -1e-9 * ev.abs().max(), ev.min()
    # The diagonal of the x-vs-x kernel equals each input against itself. Computed
    # separately, x.x comes out of a different BLAS call and differs by ~1e-16; the
    # angle sqrt(v1 v2 - c^2) turns that into ~sqrt(eps) = 1.5e-8, hence 1e-7.
    for i in range(3):
        ki = net.kernel_fn(x[i:i + 1], x[i:i + 1], get=("nngp", "ntk"))
        torch.testing.assert_close(ki.nngp[0, 0], k.nngp[i, i], rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(ki.ntk[0, 0], k.ntk[i, i], rtol=1e-7, atol=1e-12)
    # cov1 (the batch diagonal carried along) is exactly the diagonal of nngp
    torch.testing.assert_close(k.cov1, torch.diagonal(k.nngp), rtol=0, atol=0)


def test_x1_vs_x2_blocks_agree_with_joint_kernel():
    net = ARCHITECTURES["resnet"](L)
    x = _x(10)
    full = net.kernel_fn(x, get="ntk")
    block = net.kernel_fn(x[:4], x[4:], get="ntk")
    torch.testing.assert_close(block, full[:4, 4:], rtol=1e-12, atol=1e-12)


def test_dtypes_and_types():
    net = ARCHITECTURES["relu"](L)
    x32 = _x(dtype=torch.float32)
    assert net.kernel_fn(x32, get="nngp").dtype == torch.float32
    out = net.kernel_fn(x32.double().numpy(), get=("nngp", "ntk"))
    assert isinstance(out.nngp, np.ndarray) and out.ntk.dtype == np.float64
    assert isinstance(net.kernel_fn(x32, get="ntk"), torch.Tensor)
    f32 = net.kernel_fn(x32, get="ntk").double()
    f64 = net.kernel_fn(x32.double(), get="ntk")
    torch.testing.assert_close(f32, f64, rtol=1e-5, atol=1e-5)


def test_gradients_flow_to_stds_and_inputs():
    W = torch.tensor(1.4, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    net = L.serial(L.Dense(64, W_std=W, b_std=b), L.Relu(), L.Dense(64, W_std=W, b_std=b), L.Gelu(),
                   L.Dense(1, W_std=W, b_std=b))
    x = _x(5).requires_grad_(True)
    k = net.kernel_fn(x, get=("nngp", "ntk"))        # includes the exact diagonal (angle 0)
    (k.nngp.sum() + k.ntk.sum()).backward()
    for g in (W.grad, b.grad, x.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0

    # gradient matches a central finite difference in W_std
    def f(w):
        n = L.serial(L.Dense(64, W_std=w, b_std=0.3), L.Relu(), L.Dense(64, W_std=w, b_std=0.3),
                     L.Gelu(), L.Dense(1, W_std=w, b_std=0.3))
        kk = n.kernel_fn(x.detach(), get=("nngp", "ntk"))
        return float(kk.nngp.sum() + kk.ntk.sum())
    W2 = torch.tensor(1.4, dtype=torch.float64, requires_grad=True)
    net2 = L.serial(L.Dense(64, W_std=W2, b_std=0.3), L.Relu(), L.Dense(64, W_std=W2, b_std=0.3),
                    L.Gelu(), L.Dense(1, W_std=W2, b_std=0.3))
    k2 = net2.kernel_fn(x.detach(), get=("nngp", "ntk"))
    (k2.nngp.sum() + k2.ntk.sum()).backward()
    h = 1e-6
    fd = (f(1.4 + h) - f(1.4 - h)) / (2 * h)
    assert abs(W2.grad.item() - fd) <= 1e-6 * abs(fd)


def test_gradcheck_quadrature_path():
    x = _x(3, 4).requires_grad_(True)
    net = L.serial(L.Dense(8, W_std=1.2, b_std=0.1), L.Tanh(n_radial=24, n_angular=8),
                   L.Dense(1, W_std=1.0))
    assert torch.autograd.gradcheck(lambda z: net.kernel_fn(z, get="ntk"), (x,), atol=1e-6, rtol=1e-5)


def test_module_matches_spec():
    net = L.serial(L.Dense(32, W_std=2.0, b_std=0.5), L.Erf(), L.Dense(3, W_std=1.0, b_std=None,
                                                                     parameterization="standard"))
    m = net.module(input_shape=(5,), dtype=torch.float64, seed=3)
    out = m(_x(4, 5))
    assert out.shape == (4, 3) and out.dtype == torch.float64
    assert m[2].bias is None and m[0].weight.shape == (32, 5)
    # the same seed gives the same network, another seed a different one
    m2 = net.module(input_shape=(5,), dtype=torch.float64, seed=3)
    m3 = net.module(input_shape=(5,), dtype=torch.float64, seed=4)
    torch.testing.assert_close(m2(_x(4, 5)), out)
    assert not torch.allclose(m3(_x(4, 5)), out)


def test_with_width_changes_hidden_layers_only():
    net = L.serial(L.Dense(8), L.Relu(), L.Dense(8), L.Relu(), L.Dense(2))
    wide = net.with_width(100)
    assert [getattr(layer, "out_dim", None) for layer in wide.walk() if isinstance(layer, L.Dense)] \
        == [100, 100, 2]
    assert [layer.out_dim for layer in net.walk() if isinstance(layer, L.Dense)] == [8, 8, 2]
