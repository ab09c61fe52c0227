"""ConvTranspose: Monte Carlo over finite networks, output sizes, invariances, parity of the
finite module with neural-tangents' apply_fn, errors.  (Kernels against neural-tangents:
the convtranspose_* architectures of test_peer_reference.py.)"""
import os

import numpy as np
import pytest
import torch
from architectures import CONV_TRANSPOSE_APPLY_CASES
try:  # tests/ is a package on main, plain directories here
    from ._mc import (assert_blocked_equal, assert_mc_close, check_mc_nngp, check_mc_ntk,
                      images as _images, mc_spatial_nngp)
except ImportError:
    from _mc import (assert_blocked_equal, assert_mc_close, check_mc_nngp, check_mc_ntk,
                     images as _images, mc_spatial_nngp)

from widelimit import layers as L

DT = torch.float64
W = 128  # channels of the finite networks
REF = np.load(os.path.join(os.path.dirname(__file__), "..", "data", "nt_reference.npz"))


MC_CASES = {
    "same_strided_gap": (
        lambda n, pad="SAME": L.serial(
            L.Conv(n, (2, 2), padding="SAME", W_std=1.5, b_std=0.2), L.Relu(),
            L.ConvTranspose(n, (3, 2), strides=(2, 1), padding=pad, W_std=1.4, b_std=0.1),
            L.Relu(), L.GlobalAvgPool(), L.Dense(32, W_std=1.2)), (2, 4, 3)),
    "valid_strided_flatten": (
        lambda n, pad="VALID": L.serial(
            L.Conv(n, (2, 2), padding="SAME", W_std=1.5, b_std=0.2), L.Relu(),
            L.ConvTranspose(n, (2, 3), strides=(3, 2), padding=pad, W_std=1.4, b_std=0.1),
            L.Relu(), L.Flatten(), L.Dense(32, W_std=1.2, b_std=0.1)), (2, 3, 3)),
    "circular_strided_gap": (
        lambda n, pad="CIRCULAR": L.serial(
            L.Conv(n, (2, 2), padding="CIRCULAR", W_std=1.5, b_std=0.2), L.Relu(),
            L.ConvTranspose(n, (3, 3), strides=(2, 2), padding=pad, W_std=1.4, b_std=0.1),
            L.Erf(), L.GlobalSumPool(), L.Dense(32, W_std=0.4)), (2, 3, 3)),
    "conv1d_standard": (
        lambda n, pad="SAME": L.serial(
            L.ConvTranspose(n, (3,), strides=(2,), padding=pad, W_std=1.5, b_std=0.2,
                            parameterization="standard"), L.Relu(),
            L.ConvTranspose(n, (4,), strides=(3,), padding="VALID", W_std=1.3,
                            parameterization="standard"), L.Relu(), L.Flatten(),
            L.Dense(32, parameterization="standard")), (3, 4)),
    "conv3d": (
        lambda n, pad="CIRCULAR": L.serial(
            L.ConvTranspose(n, (2, 2, 3), strides=(2, 1, 2), padding=pad, W_std=1.5,
                            b_std=0.1), L.Relu(), L.GlobalAvgPool(), L.Dense(32)), (2, 2, 2, 2)),
}


@pytest.mark.parametrize("name", sorted(MC_CASES))
def test_nngp_monte_carlo(name):
    build, shape = MC_CASES[name]
    check_mc_nngp(build, shape, W, name)


@pytest.mark.parametrize("name", ["circular_strided_gap", "conv1d_standard"])
def test_ntk_monte_carlo(name):
    build, shape = MC_CASES[name]
    check_mc_ntk(build, shape, 64, name + " ntk")


def _spatial_net(n, layer, ndim=2):
    return L.serial(L.Conv(n, (2,) * ndim, padding="SAME", W_std=1.5, b_std=0.2), L.Relu(), layer)


SPATIAL = {  # name: (ConvTranspose arguments, input shape)
    "same_2d": (((3, 2), (2, 1), "SAME"), (2, 3, 3)),
    "valid_2d": (((2, 3), (3, 2), "VALID"), (2, 2, 3)),
    "circular_2d": (((3, 3), (2, 2), "CIRCULAR"), (2, 3, 2)),
    "circular_wide_1d": (((7,), (1,), "CIRCULAR"), (2, 3)),
    "valid_3d": (((2, 1, 3), (2, 2, 1), "VALID"), (2, 2, 2, 2)),
}


@pytest.mark.parametrize("name", sorted(SPATIAL))
def test_position_resolved_monte_carlo(name):
    """Every pair of output positions: E[z(x1)_p z(x2)_q] of the finite layer against the
    full spatial kernel, so any misplaced shift, pad or fold shows."""
    (filt, strides, padding), shape = SPATIAL[name]
    net = _spatial_net(W, L.ConvTranspose(W, filt, strides, padding, W_std=1.4, b_std=0.1),
                       len(filt))
    x1, x2 = _images(2, shape, 1), _images(2, shape, 2)
    exact = net.kernel_fn(x1, x2, diagonal_spatial=False).nngp.numpy()
    samples = mc_spatial_nngp(net, x1, x2, n_nets=16)
    assert samples.shape[1:] == exact.shape
    assert_mc_close(samples, exact, W, what=name)
    if padding != "VALID":    # the same samples reject the other padding's kernel
        other = "SAME" if padding == "CIRCULAR" else "CIRCULAR"
        wrong = _spatial_net(W, L.ConvTranspose(W, filt, strides, other, W_std=1.4, b_std=0.1),
                             len(filt)).kernel_fn(x1, x2, diagonal_spatial=False).nngp.numpy()
        with pytest.raises(AssertionError):
            assert_mc_close(samples, wrong, W)


@pytest.mark.parametrize("padding", ["SAME", "VALID", "CIRCULAR"])
@pytest.mark.parametrize("f,s", [(1, 1), (2, 3), (3, 2), (5, 1), (4, 4), (7, 2)])
def test_output_size_module_equals_kernel(padding, f, s):
    for n in (1, 3, 4):
        layer = L.ConvTranspose(4, (f, 2), strides=(s, 1), padding=padding)
        x = _images(2, (2, n, 3))
        y = layer.module((2, n, 3), dtype=DT)(x)
        expect = n * s if padding != "VALID" else n * s + max(f - s, 0)
        k = layer.kernel_fn(x, diagonal_spatial=False)
        assert y.shape[2] == expect == k.shape1[2] == k.nngp.shape[2] == k.nngp.shape[3]
        assert y.shape[3] == (3 if padding != "VALID" else 4) == k.nngp.shape[4]


@pytest.mark.parametrize("j", range(8))
def test_module_matches_neural_tangents_apply(j):
    key = f"apply/convtranspose/{j}"
    shape, filt, strides, padding = CONV_TRANSPOSE_APPLY_CASES[j]
    m = L.ConvTranspose(3, filt, strides, padding, W_std=1.4, b_std=0.2).module(shape[1:], dtype=DT)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(REF[key + "/w"]))
        m.bias.copy_(torch.from_numpy(REF[key + "/b"]))
        y = m(torch.from_numpy(REF[key + "/x"])).numpy()
    np.testing.assert_allclose(y, REF[key + "/y"], rtol=1e-12, atol=1e-12)


def test_diagonal_and_full_spatial_agree_for_flatten():
    net = L.serial(L.Conv(8, (2, 2), padding="SAME", W_std=1.5, b_std=0.1), L.Gelu(),
                   L.ConvTranspose(8, (3, 2), strides=(2, 3), padding="CIRCULAR", W_std=1.3,
                                   b_std=0.2), L.Relu(),
                   L.ConvTranspose(8, (2, 2), strides=(2, 1), padding="VALID", W_std=1.2),
                   L.Erf(), L.Flatten(), L.Dense(1))
    assert not net.requires_full_spatial()      # the automatic choice is the diagonal
    x1, x2 = _images(3, (2, 4, 3), 9), _images(2, (2, 4, 3), 10)
    auto = net.kernel_fn(x1, x2)
    full = net.kernel_fn(x1, x2, diagonal_spatial=False)
    torch.testing.assert_close(auto.nngp, full.nngp, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(auto.ntk, full.ntk, rtol=1e-12, atol=1e-14)


def test_gap_circular_shift_invariance():
    """Circular padding and a full fold make the layer shift-equivariant (a shift by one
    input position moves the output by ``stride``), so a GAP head is shift-invariant."""
    net = L.serial(L.Conv(8, (3, 2), padding="CIRCULAR", W_std=1.5, b_std=0.1), L.Relu(),
                   L.ConvTranspose(8, (3, 3), strides=(2, 1), padding="CIRCULAR", W_std=1.3),
                   L.Erf(), L.GlobalAvgPool(), L.Dense(1))
    x1, x2 = _images(3, (2, 4, 5), 5), _images(2, (2, 4, 5), 6)
    k = net.kernel_fn(x1, x2, get=("nngp", "ntk"))
    for shift in [(1, 0), (2, 3), (-1, 4)]:
        ks = net.kernel_fn(torch.roll(x1, shift, (2, 3)), torch.roll(x2, shift, (2, 3)),
                           get=("nngp", "ntk"))
        torch.testing.assert_close(ks.nngp, k.nngp, rtol=1e-12, atol=0)
        torch.testing.assert_close(ks.ntk, k.ntk, rtol=1e-12, atol=0)


def test_symmetric_psd_and_blocked():
    net = L.serial(L.ConvTranspose(8, (3, 2), strides=(2, 2), padding="SAME", W_std=1.5,
                                   b_std=0.1), L.Relu(),
                   L.ConvTranspose(8, (2, 2), padding="VALID", W_std=1.3), L.Relu(),
                   L.GlobalAvgPool(), L.Dense(1))
    x = _images(7, (2, 3, 3), 11)
    ref = net.kernel_fn(x)
    for name in ("nngp", "ntk"):
        mat = getattr(ref, name)
        torch.testing.assert_close(mat, mat.T, rtol=1e-13, atol=0)
        assert torch.linalg.eigvalsh(mat).min() > -1e-10 * mat.abs().max()
    assert_blocked_equal(net, x)


@pytest.mark.parametrize("method", ["linear", "nearest"])
def test_differentiable(method):
    """Gradients to inputs and W_std through ConvTranspose and ImageResize (off-diagonal
    pairs: ReLU-type duals are not differentiable at identical inputs)."""
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, 2, 3, 3, dtype=DT, generator=g).requires_grad_()
    x2 = torch.randn(1, 2, 3, 3, dtype=DT, generator=g).requires_grad_()
    w = torch.tensor(1.3, dtype=DT, requires_grad=True)

    def f(x1, x2, w):
        net = L.serial(L.Conv(4, (2, 2), padding="SAME", W_std=w, b_std=0.1), L.Erf(),
                       L.ConvTranspose(4, (3, 2), (2, 2), "CIRCULAR", W_std=w, b_std=0.1),
                       L.Erf(), L.ImageResize((-1, -1, 4, 5), method), L.GlobalAvgPool(),
                       L.Dense(1, W_std=w))
        return net.kernel_fn(x1, x2, get="ntk")

    assert torch.autograd.gradcheck(f, (x1, x2, w))


# ---- errors -------------------------------------------------------------------------------

def test_errors():
    with pytest.raises(ValueError, match="`padding`"):
        L.ConvTranspose(8, (3, 3), padding="REFLECT")
    with pytest.raises(ValueError, match="`strides`"):
        L.ConvTranspose(8, (3, 3), strides=(2,))
    with pytest.raises(ValueError, match="`filter_shape`"):
        L.ConvTranspose(8, (3, 3, 3, 3))
    with pytest.raises(ValueError, match="`out_chan`"):
        L.ConvTranspose(0, (3,))
    net = L.serial(L.ConvTranspose(8, (3, 3), strides=(2, 2)), L.Relu(), L.GlobalAvgPool())
    with pytest.raises(ValueError, match=r"ConvTranspose has 2 spatial.*`x1`/`x2` have 1"):
        net.kernel_fn(_images(2, (3, 8)))
    with pytest.raises(ValueError, match=r"ConvTransposeModule has 2 spatial"):
        net.module()(_images(2, (3, 4, 4, 4)))
    with pytest.raises(ValueError, match="diagonal_spatial=True is impossible"):
        net.kernel_fn(_images(2, (3, 4, 4)), diagonal_spatial=True)
