"""ImageResize: Monte Carlo over finite networks, parity of the module with jax.image.resize,
identities, layouts, errors.  (Kernels against neural-tangents: the resize_* architectures
of test_peer_reference.py.)"""
import os

import numpy as np
import pytest
import torch
from architectures import RESIZE_APPLY_METHODS, RESIZE_APPLY_SHAPES
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


def _net(n, resize, head=None, ndim=2):
    return L.serial(L.Conv(n, (2,) * ndim, padding="SAME", W_std=1.5, b_std=0.2), L.Relu(),
                    resize, L.Conv(n, (2,) * ndim, padding="SAME", W_std=1.3, b_std=0.1),
                    L.Relu(), head or L.GlobalAvgPool(), L.Dense(32, W_std=1.2, b_std=0.1))


MC_CASES = {
    "linear_up_gap": (lambda n, aa=True: _net(n, L.ImageResize((-1, -1, 6, 5), "linear",
                                                                antialias=aa)), (2, 3, 3)),
    "linear_down_antialias": (lambda n, aa=True: _net(n, L.ImageResize((-1, -1, 3, 2), "bilinear",
                                                                        antialias=aa)), (2, 6, 5)),
    "nearest_flatten": (lambda n, aa=True: _net(n, L.ImageResize((-1, -1, 5, 2), "nearest"),
                                                 L.Flatten()), (2, 3, 4)),
    "cubic_1d_flatten": (lambda n, aa=True: _net(n, L.ImageResize((-1, -1, 5), "cubic"),
                                                  L.Flatten(), ndim=1), (2, 8)),
    "lanczos3_1d_up": (lambda n, aa=True: _net(n, L.ImageResize((-1, -1, 9), "lanczos3"),
                                                ndim=1), (2, 4)),
}


@pytest.mark.parametrize("name", sorted(MC_CASES))
def test_nngp_monte_carlo(name):
    build, shape = MC_CASES[name]
    check_mc_nngp(build, shape, W, name)


def test_ntk_monte_carlo():
    build, shape = MC_CASES["linear_down_antialias"]
    check_mc_ntk(build, shape, 64, "resize ntk")


SPATIAL = {  # name: (ImageResize arguments, input shape)
    "linear_up": (((-1, -1, 5, 4), "linear", True), (2, 3, 2)),
    "linear_down_antialias": (((-1, -1, 3, 2), "linear", True), (2, 6, 5)),
    "linear_down_plain": (((-1, -1, 3, 2), "linear", False), (2, 6, 5)),
    "nearest": (((-1, -1, 5, 2), "nearest", True), (2, 3, 4)),
    "cubic_1d": (((-1, -1, 7), "cubic", True), (2, 4)),
}


@pytest.mark.parametrize("name", sorted(SPATIAL))
def test_position_resolved_monte_carlo(name):
    """Every pair of output positions after Conv, Relu, ImageResize, against the full
    spatial kernel; the antialiased samples must also reject the plain kernel and back."""
    (shape_out, method, aa), shape = SPATIAL[name]
    ndim = len(shape) - 1

    def net(antialias):
        return L.serial(L.Conv(W, (2,) * ndim, padding="SAME", W_std=1.5, b_std=0.2), L.Relu(),
                        L.ImageResize(shape_out, method, antialias=antialias))

    x1, x2 = _images(2, shape, 1), _images(2, shape, 2)
    exact = net(aa).kernel_fn(x1, x2, diagonal_spatial=False).nngp.numpy()
    samples = mc_spatial_nngp(net(aa), x1, x2, n_nets=16)
    assert samples.shape[1:] == exact.shape
    assert_mc_close(samples, exact, W, what=name)
    if name.startswith("linear_down"):
        wrong = net(not aa).kernel_fn(x1, x2, diagonal_spatial=False).nngp.numpy()
        with pytest.raises(AssertionError):
            assert_mc_close(samples, wrong, W)


@pytest.mark.parametrize("method", RESIZE_APPLY_METHODS)
@pytest.mark.parametrize("antialias", [True, False])
def test_module_matches_jax_image_resize(method, antialias):
    for j, (_, shape_out) in enumerate(RESIZE_APPLY_SHAPES):
        key = f"apply/resize/{method}/{antialias}/{j}"
        m = L.ImageResize((-1, -1) + shape_out[2:], method, antialias=antialias).module()
        y = m(torch.from_numpy(REF[key + "/x"])).numpy()
        assert y.shape == shape_out
        np.testing.assert_allclose(y, REF[key + "/y"], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("method", ["linear", "nearest", "cubic"])
def test_same_size_and_minus_one_are_identities(method):
    x1, x2 = _images(3, (2, 4, 5), 5), _images(2, (2, 4, 5), 6)
    plain = _net(8, L.Identity()).kernel_fn(x1, x2, get=("nngp", "ntk"))
    for shape in [(-1, -1, 4, 5), (-1, -1, -1, 5), (-1, -1, -1, -1)]:
        net = _net(8, L.ImageResize(shape, method))
        got = net.kernel_fn(x1, x2, get=("nngp", "ntk"))
        torch.testing.assert_close(got.nngp, plain.nngp, rtol=1e-14, atol=0)
        torch.testing.assert_close(got.ntk, plain.ntk, rtol=1e-14, atol=0)
        assert torch.equal(net.module((2, 4, 5), dtype=DT, seed=0)(x1),
                           _net(8, L.Identity()).module((2, 4, 5), dtype=DT, seed=0)(x1))


def test_nearest_works_on_the_diagonal_layout():
    net = _net(8, L.ImageResize((-1, -1, 7, 3), "nearest"), L.Flatten())
    x1, x2 = _images(3, (2, 4, 5), 7), _images(2, (2, 4, 5), 8)
    assert not net.requires_full_spatial()
    diag = net.kernel_fn(x1, x2, get=("nngp", "ntk"), diagonal_spatial=True)
    full = net.kernel_fn(x1, x2, get=("nngp", "ntk"), diagonal_spatial=False)
    torch.testing.assert_close(diag.nngp, full.nngp, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(diag.ntk, full.ntk, rtol=1e-12, atol=1e-14)
    assert _net(8, L.ImageResize((-1, -1, 7, 3), "linear"), L.Flatten()).requires_full_spatial()


def test_symmetric_psd_and_blocked():
    net = _net(8, L.ImageResize((-1, -1, 7, 2), "linear"))
    x = _images(7, (2, 4, 5), 11)
    ref = net.kernel_fn(x)
    assert ref.shape1 == (7, 32)
    for name in ("nngp", "ntk"):
        mat = getattr(ref, name)
        torch.testing.assert_close(mat, mat.T, rtol=1e-13, atol=0)
        assert torch.linalg.eigvalsh(mat).min() > -1e-10 * mat.abs().max()
    assert_blocked_equal(net, x)


# ---- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,match", [
    (5, "sequence"), ((-1, 4), "3 to 5 entries"), ((-1, -1, 0, 4), "positive integers or -1"),
    ((-1, -1, 2.5), "positive integers or -1"), ((4, -1, 3, 3), "batch and channel"),
    ((-1, 8, 3, 3), "batch and channel")])
def test_error_bad_shape(shape, match):
    with pytest.raises(ValueError, match=r"`shape`.*" + match):
        L.ImageResize(shape, "linear")


def test_error_bad_method():
    with pytest.raises(ValueError, match=r"`method` must be one of .*'area'"):
        L.ImageResize((-1, -1, 3, 3), "area")


def test_error_wrong_spatial_dims_and_layout():
    layer = L.ImageResize((-1, -1, 3, 3), "linear")
    with pytest.raises(ValueError, match=r"ImageResize has 2 spatial.*`x1`/`x2` have 1"):
        layer.kernel_fn(_images(2, (3, 8)))
    with pytest.raises(ValueError, match=r"ImageResize has 2 spatial.*have 3"):
        layer.module()(_images(2, (3, 4, 4, 4)))
    with pytest.raises(ValueError, match="diagonal_spatial=True is impossible"):
        _net(8, layer, L.Flatten()).kernel_fn(_images(2, (2, 4, 4)), diagonal_spatial=True)
