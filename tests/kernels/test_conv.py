"""Conv / pooling / Flatten kernels: Monte Carlo over finite CNNs, invariances, blocking, errors."""
import numpy as np
import pytest
import torch
try:  # tests/ is a package on main, plain directories here
    from ._mc import check_mc_nngp, check_mc_ntk, images as _images
except ImportError:
    from _mc import check_mc_nngp, check_mc_ntk, images as _images

from widelimit import layers as L

DT = torch.float64


W = 128  # channels of the finite networks

MC_CASES = {
    "conv_relu_flatten": (
        lambda n: L.serial(L.Conv(n, (3, 3), padding="VALID", W_std=1.5, b_std=0.2), L.Relu(),
                           L.Conv(n, (2, 2), strides=(2, 1), padding="SAME", W_std=1.4),
                           L.Relu(), L.Flatten(), L.Dense(32, W_std=1.2, b_std=0.1)), (3, 6, 5)),
    "conv_relu_gap": (
        lambda n: L.serial(L.Conv(n, (3, 3), padding="SAME", W_std=1.5, b_std=0.2), L.Relu(),
                           L.Conv(n, (3, 3), padding="SAME", W_std=1.4), L.Relu(),
                           L.GlobalAvgPool(), L.Dense(32, W_std=1.2)), (3, 5, 5)),
    "conv_avgpool": (
        lambda n: L.serial(L.Conv(n, (2, 3), padding="SAME", W_std=1.5, b_std=0.2), L.Erf(),
                           L.AvgPool((2, 2), strides=(2, 1), padding="SAME",
                                     normalize_edges=True),
                           L.Conv(n, (2, 2), W_std=1.3), L.Relu(), L.SumPool((2, 1)),
                           L.Flatten(), L.Dense(32)), (2, 6, 5)),
    "circular_strided": (
        lambda n: L.serial(L.Conv(n, (3, 2), strides=(2, 1), padding="CIRCULAR", W_std=1.5,
                                  b_std=0.1), L.Relu(),
                           L.Conv(n, (3, 3), strides=(1, 2), padding="CIRCULAR", W_std=1.4),
                           L.Gelu(), L.GlobalSumPool(), L.Dense(32, W_std=0.5)), (2, 6, 5)),
    "conv_local_asymmetric": (
        lambda n: L.serial(L.Conv(n, (3, 3), padding="SAME", W_std=1.5, b_std=0.2), L.Relu(),
                           L.ConvLocal(n, (2, 3), strides=(1, 2), W_std=1.3, b_std=0.3),
                           L.Relu(), L.GlobalAvgPool(), L.Dense(32)), (2, 5, 6)),
    "conv1d_standard": (
        lambda n: L.serial(L.Conv(n, (3,), padding="SAME", W_std=1.5, b_std=0.2,
                                  parameterization="standard"), L.Relu(),
                           L.Conv(n, (2,), strides=(2,), W_std=1.3, parameterization="standard"),
                           L.Relu(), L.Flatten(), L.Dense(32, parameterization="standard")), (3, 7)),
    "conv3d": (
        lambda n: L.serial(L.Conv(n, (2, 2, 2), padding="SAME", W_std=1.5, b_std=0.1), L.Relu(),
                           L.GlobalAvgPool(), L.Dense(32)), (2, 3, 3, 2)),
}


@pytest.mark.parametrize("name", sorted(MC_CASES))
def test_nngp_monte_carlo(name):
    build, shape = MC_CASES[name]
    check_mc_nngp(build, shape, W, name)


@pytest.mark.parametrize("name", ["conv_relu_gap", "conv1d_standard"])
def test_ntk_monte_carlo(name):
    build, shape = MC_CASES[name]
    check_mc_ntk(build, shape, 64, name + " ntk")


@pytest.mark.parametrize("name", sorted(MC_CASES))
def test_module_output_shape(name):
    build, shape = MC_CASES[name]
    x = _images(2, shape)
    assert build(8).module(shape, dtype=DT)(x).shape == (2, 32)


def test_gap_circular_shift_invariance():
    net = L.serial(L.Conv(8, (3, 3), padding="CIRCULAR", W_std=1.5, b_std=0.1), L.Relu(),
                   L.Conv(8, (2, 3), padding="CIRCULAR", W_std=1.3), L.Erf(),
                   L.GlobalAvgPool(), L.Dense(1))
    x1, x2 = _images(3, (2, 6, 5), 5), _images(2, (2, 6, 5), 6)
    k = net.kernel_fn(x1, x2, get=("nngp", "ntk"))
    for shift in [(1, 0), (2, 3), (-1, 4)]:
        ks = net.kernel_fn(torch.roll(x1, shift, (2, 3)), torch.roll(x2, shift, (2, 3)),
                           get=("nngp", "ntk"))
        torch.testing.assert_close(ks.nngp, k.nngp, rtol=1e-13, atol=0)
        torch.testing.assert_close(ks.ntk, k.ntk, rtol=1e-13, atol=0)


@pytest.mark.parametrize("pooled", [True, False])
@pytest.mark.parametrize("same", [True, False])
def test_blocked_equals_unblocked(pooled, same):
    layers = [L.Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.1), L.Relu(),
              L.Conv(8, (2, 2), strides=(2, 1), padding="CIRCULAR", W_std=1.3), L.Relu()]
    layers += [L.AvgPool((2, 2)), L.GlobalAvgPool(), L.Dense(1)] if pooled else [L.AvgPool((2, 2))]
    net = L.serial(*layers)
    x1, x2 = _images(7, (2, 6, 5), 7), (None if same else _images(5, (2, 6, 5), 8))
    ref = net.kernel_fn(x1, x2)
    got = net.kernel_fn(x1, x2, max_memory="1.5MB")
    # bit-identical except for last-bit differences of vectorised transcendental functions
    # (atan2, sqrt) between SIMD lanes and the scalar tail.  For x2=None the entries of an
    # input with itself sit where sqrt(v1 v2 - c^2) cancels (v1 v2 = c^2), which amplifies
    # a last-bit difference to ~1e-9; they get a looser tolerance.
    eye = torch.eye(7, dtype=torch.bool) if same else torch.zeros(7, 5, dtype=torch.bool)
    for name in ("nngp", "ntk"):
        a, b = getattr(got, name), getattr(ref, name)
        torch.testing.assert_close(a[~eye], b[~eye], rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(a[eye], b[eye], rtol=1e-7, atol=0)
    torch.testing.assert_close(got.cov1, ref.cov1, rtol=1e-13, atol=1e-15)
    assert got.nngp.shape == ref.nngp.shape and got.shape1 == ref.shape1
    if same:   # exactly symmetric off the batch diagonal
        swapped = got.nngp.T if pooled else got.nngp.permute(1, 0, 3, 2, 5, 4)
        off = ~torch.eye(7, dtype=torch.bool)
        assert torch.equal(got.nngp[off], swapped[off])


def test_blocking_used_and_plan():
    from widelimit.kernels.state import inputs_to_kernel
    from widelimit.scale.blocking import plan_blocks
    net = L.serial(L.Conv(8, (3, 3), padding="SAME"), L.Relu(), L.GlobalAvgPool())
    x = _images(9, (2, 6, 6))
    plan = plan_blocks(lambda a, b: net.apply_kernel(inputs_to_kernel(a, b, diagonal_spatial=False)),
                       x, x, 2_000_000)
    assert 1 <= plan.b1 < 9 and 1 <= plan.b2 <= 9 and plan.per_pair >= 36 * 36


def test_diagonal_and_full_spatial_agree_for_flatten():
    net = L.serial(L.Conv(8, (3, 2), padding="SAME", W_std=1.5, b_std=0.1), L.Gelu(),
                   L.Conv(8, (2, 2), strides=(2, 2), W_std=1.3), L.LayerNorm(), L.Sin(),
                   L.Flatten(), L.Dense(1))
    x1, x2 = _images(3, (2, 6, 5), 9), _images(2, (2, 6, 5), 10)
    auto = net.kernel_fn(x1, x2)
    assert auto.diagonal_spatial
    full = net.kernel_fn(x1, x2, diagonal_spatial=False)
    torch.testing.assert_close(auto.nngp, full.nngp, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(auto.ntk, full.ntk, rtol=1e-12, atol=1e-14)


def test_numpy_and_float32():
    net = L.serial(L.Conv(8, (3, 3), padding="SAME"), L.Relu(), L.GlobalAvgPool(), L.Dense(1))
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 5)).astype(np.float32)
    out = net.kernel_fn(x, None, get="ntk")
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, 3)


# ---- errors -------------------------------------------------------------------------------

def test_error_wrong_number_of_spatial_dims():
    net = L.serial(L.Conv(8, (3, 3)), L.Relu(), L.GlobalAvgPool())
    with pytest.raises(ValueError, match=r"`x1`/`x2` have 1"):
        net.kernel_fn(_images(2, (3, 8)))
    with pytest.raises(ValueError, match=r"spatial"):
        L.serial(L.AvgPool((2,)), L.Flatten()).kernel_fn(_images(2, (3, 8, 8)))


def test_error_channel_mismatch():
    net = L.serial(L.Conv(8, (3, 3)), L.Relu(), L.GlobalAvgPool())
    with pytest.raises(ValueError, match=r"`x1` and `x2`"):
        net.kernel_fn(_images(2, (3, 6, 6)), _images(2, (2, 6, 6)))


def test_error_valid_filter_too_large():
    with pytest.raises(ValueError, match=r"`filter_shape` 5 is larger than the input"):
        L.serial(L.Conv(8, (5, 2)), L.Relu(), L.Flatten()).kernel_fn(_images(2, (3, 4, 6)))
    with pytest.raises(ValueError, match=r"`window_shape`"):
        L.serial(L.Conv(8, (1, 1)), L.AvgPool((3, 3))).kernel_fn(_images(2, (3, 2, 6)))


def test_error_memory_budget_too_small():
    net = L.serial(L.Conv(8, (3, 3), padding="SAME"), L.Relu(), L.GlobalAvgPool())
    with pytest.raises(ValueError, match=r"`max_memory`.*too small"):
        net.kernel_fn(_images(4, (3, 8, 8)), max_memory="10KB")
    with pytest.raises(ValueError, match=r"`max_memory`"):
        net.kernel_fn(_images(4, (3, 8, 8)), max_memory="lots")


def test_error_bad_hyperparameters():
    with pytest.raises(ValueError, match="`padding`"):
        L.Conv(8, (3, 3), padding="REFLECT")
    with pytest.raises(ValueError, match="`strides`"):
        L.Conv(8, (3, 3), strides=(1,))
    with pytest.raises(ValueError, match="`filter_shape`"):
        L.Conv(8, (0, 3))
    with pytest.raises(ValueError, match="`out_chan`"):
        L.Conv(0, (3, 3))
    with pytest.raises(ValueError, match="diagonal_spatial=True is impossible"):
        L.serial(L.Conv(8, (3, 3)), L.GlobalAvgPool()).kernel_fn(_images(2, (3, 5, 5)),
                                                                 diagonal_spatial=True)


@pytest.mark.parametrize("full", [False, True])
def test_index_slices_the_kernel(full):
    base = L.serial(L.Conv(8, (3, 3), padding="SAME", W_std=1.3, b_std=0.1), L.Relu(),
                    L.Conv(8, (3, 3), padding="SAME"))
    x1, x2 = _images(3, (2, 5, 6), 11), _images(2, (2, 5, 6), 12)
    k = base.kernel_fn(x1, x2, diagonal_spatial=not full)
    k2 = L.serial(base, L.Slice[:, :, 1:4, 2]).kernel_fn(x1, x2, diagonal_spatial=not full)
    ref = k.nngp[:, :, 1:4, 1:4, 2, 2] if full else k.nngp[:, :, 1:4, 2]
    assert torch.equal(k2.nngp, ref) and k2.shape1 == (3, 8, 3)
    assert L.serial(base, L.Slice[:, :, 1:4, 2]).module()(x1).shape == (3, 8, 3)
    with pytest.raises(ValueError, match="`idx`"):
        L.Index((0, slice(None)))


def test_gradient_through_blocked_computation():
    w = torch.tensor(1.3, dtype=DT, requires_grad=True)
    net = L.serial(L.Conv(8, (3, 3), padding="SAME", W_std=w, b_std=0.1), L.Relu(),
                   L.GlobalAvgPool(), L.Dense(1))
    x = _images(6, (2, 5, 5), 13)
    net.kernel_fn(x, None, get="ntk", max_memory="1MB").sum().backward()
    blocked, w.grad = w.grad.clone(), None
    net.kernel_fn(x, None, get="ntk").sum().backward()
    torch.testing.assert_close(blocked, w.grad, rtol=1e-10, atol=0)
