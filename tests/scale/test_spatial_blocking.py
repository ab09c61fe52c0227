"""Spatial blocking (widelimit.scale.spatial): bands of positions == the unblocked kernel,
to 1e-12 relative to the largest entry in float64, for every entry (pairs of an input
with itself included); the automatic path and its memory; errors."""
import numpy as np
import pytest
import torch

from widelimit import layers as L
from widelimit.scale import spatial
from widelimit.scale.blocking import LIVE_TENSORS, PeakBytes

DT = torch.float64


def _images(n, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n,) + shape, generator=g, dtype=DT)


CASES = {
    "conv_relu_gap": (lambda: L.serial(
        L.Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.1), L.Relu(),
        L.Conv(8, (3, 3), padding="SAME", W_std=1.3), L.Relu(), L.GlobalAvgPool(), L.Dense(1)),
        (2, 7, 6)),
    "stride2_valid_erf_avgpool_flatten": (lambda: L.serial(
        L.Conv(8, (3, 2), strides=(2, 1), padding="VALID", W_std=1.5, b_std=0.1), L.Erf(),
        L.AvgPool((2, 2)), L.Flatten(), L.Dense(3, W_std=1.2, b_std=0.1), L.Relu(), L.Dense(1)),
        (2, 9, 6)),
    "circular_strided_sumpool": (lambda: L.serial(
        L.Conv(8, (3, 2), strides=(2, 1), padding="CIRCULAR", W_std=1.5, b_std=0.1), L.Relu(),
        L.Conv(8, (3, 3), strides=(1, 2), padding="CIRCULAR", W_std=1.4), L.Gelu(),
        L.GlobalSumPool(), L.Dense(3, W_std=0.5), L.Erf()), (2, 6, 5)),
    "pools_layernorm_edges": (lambda: L.serial(
        L.Conv(8, (2, 3), padding="SAME", W_std=1.5, b_std=0.2), L.LayerNorm(), L.Erf(),
        L.AvgPool((2, 2), strides=(2, 1), padding="SAME", normalize_edges=True),
        L.Conv(8, (2, 2), W_std=1.3), L.Relu(), L.AvgPool((3, 2), strides=(2, 2), padding="CIRCULAR"),
        L.SumPool((2, 1)), L.Flatten(), L.Dense(1)), (2, 11, 6)),
    "pool_first_standard": (lambda: L.serial(
        L.AvgPool((2, 2), strides=(2, 2)),
        L.Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.2, parameterization="standard"),
        L.Relu(), L.GlobalAvgPool(), L.Dense(1, parameterization="standard")), (2, 8, 6)),
    "conv1d": (lambda: L.serial(
        L.Conv(8, (3,), padding="SAME", W_std=1.5, b_std=0.2), L.Relu(),
        L.Conv(8, (2,), strides=(2,), W_std=1.3), L.Tanh(), L.AvgPool((2,), padding="SAME"),
        L.GlobalAvgPool(), L.Dense(1)), (3, 11)),
    "conv3d": (lambda: L.serial(
        L.Conv(8, (2, 2, 2), padding="SAME", W_std=1.5, b_std=0.1), L.Relu(),
        L.Conv(8, (3, 1, 2), strides=(2, 1, 1), padding="CIRCULAR"), L.Erf(),
        L.GlobalAvgPool(), L.Dense(1)), (2, 7, 3, 3)),
}


def assert_same(got, ref):
    for name in ("nngp", "ntk", "cov1", "cov2"):
        a, b = getattr(got, name), getattr(ref, name)
        if b is None:
            assert a is None, name
            continue
        assert a.shape == b.shape, name
        assert float((a - b).abs().max()) <= 1e-12 * float(b.abs().max()), name
    assert got.shape1 == ref.shape1 and got.shape2 == ref.shape2
    assert got.is_gaussian == ref.is_gaussian and got.x1_is_x2 == ref.x1_is_x2


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("same", [True, False])
@pytest.mark.parametrize("name", sorted(CASES))
def test_spatial_equals_unblocked(name, same, rows):
    build, shape = CASES[name]
    net = build()
    x1, x2 = _images(3, shape, 1), (None if same else _images(2, shape, 2))
    ref = net.kernel_fn(x1, x2, spatial_blocking=False)
    got = net.kernel_fn(x1, x2, spatial_blocking=rows)
    assert_same(got, ref)


@pytest.mark.parametrize("same", [True, False])
def test_blocks_of_pairs_and_automatic_band_height(same):
    """Budget-chosen bands and blocks of pairs (mirrored for x2=None)."""
    net = CASES["conv_relu_gap"][0]()
    x1, x2 = _images(5, (2, 7, 6), 1), (None if same else _images(4, (2, 7, 6), 2))
    ref = net.kernel_fn(x1, x2, spatial_blocking=False)
    for budget in ("1MB", "3MB"):
        assert_same(net.kernel_fn(x1, x2, spatial_blocking=True, max_memory=budget), ref)
    if same:
        got = net.kernel_fn(x1, None, spatial_blocking=True, max_memory="1MB")
        assert torch.equal(got.nngp, got.nngp.T) and torch.equal(got.ntk, got.ntk.T)


def test_automatic_spatial_path_stays_under_budget(monkeypatch):
    """A budget too small for one pair: the spatial path is taken, and its peak memory (the
    allocator's bytes in use, where measurable; and the planner's largest-tensor model)
    stays under it, while the unblocked computation of one pair exceeds it."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)   # bands in this thread, which
    net = CASES["conv_relu_gap"][0]()                           # the dispatch mode sees
    x1, x2 = _images(3, (2, 16, 16), 1), _images(2, (2, 16, 16), 2)
    budget = 3_000_000
    ref = net.kernel_fn(x1, x2, spatial_blocking=False)
    one_pair = PeakBytes(x1.device)
    with one_pair:
        net.kernel_fn(x1[:1], x2[:1], spatial_blocking=False)
    assert 3 * LIVE_TENSORS * one_pair.max_numel * 8 > budget
    if one_pair.peak is not None:
        assert one_pair.peak > budget
    with pytest.raises(ValueError, match="max_memory.*spatial_blocking=True"):
        net.kernel_fn(x1, x2, max_memory=budget, spatial_blocking=False)

    calls = []
    original = spatial.spatial_kernel
    monkeypatch.setattr(spatial, "spatial_kernel", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    net.kernel_fn(x1, x2, max_memory=budget)       # warm-up: one-off allocations of a first call
    probe = PeakBytes(x1.device)
    with probe:
        got = net.kernel_fn(x1, x2, max_memory=budget)
    assert len(calls) == 2
    assert LIVE_TENSORS * probe.max_numel * 8 <= budget
    assert probe.max_numel < one_pair.max_numel
    if probe.peak is not None:
        assert probe.peak <= budget
    assert_same(got, ref)
    # a budget one pair fits: the usual path
    calls.clear()
    net.kernel_fn(x1, x2, max_memory="1GB")
    assert not calls


def test_gradients_flow_through_bands():
    w = torch.tensor(1.4, dtype=DT, requires_grad=True)
    net = L.serial(L.Conv(8, (3, 3), padding="SAME", W_std=w, b_std=0.1), L.Relu(),
                   L.AvgPool((2, 2)), L.GlobalAvgPool())
    x1, x2 = _images(2, (2, 6, 5), 1), _images(2, (2, 6, 5), 2)
    g_ref, = torch.autograd.grad(net.kernel_fn(x1, x2, get="ntk", spatial_blocking=False).sum(), w)
    g, = torch.autograd.grad(net.kernel_fn(x1, x2, get="ntk", spatial_blocking=2).sum(), w)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=0)


def test_numpy_and_float32():
    net = CASES["conv_relu_gap"][0]()
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6)).astype(np.float32)
    got = net.kernel_fn(x, None, get="ntk", spatial_blocking=2)
    ref = net.kernel_fn(x, None, get="ntk", spatial_blocking=False)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5)


# ---- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("net", [
    L.serial(L.Conv(8, (3, 3)), L.Relu(), L.ConvLocal(8, (2, 2)), L.GlobalAvgPool()),
    L.serial(L.Conv(8, (3, 3)), L.Relu(), L.FanOut(2),
             L.parallel(L.Conv(8, (3, 3), padding="SAME"), L.Conv(8, (1, 1))), L.FanInSum(),
             L.GlobalAvgPool()),
    L.serial(L.Conv(8, (3, 3)), L.GlobalSelfAttention(8, 8, 8, 1), L.GlobalAvgPool()),
    L.serial(L.Conv(8, (3, 3)), L.Relu(), L.AvgPool((2, 2))),
    L.serial(L.Conv(8, (3, 3)), L.Relu(), L.ConvTranspose(8, (3, 3)), L.GlobalAvgPool()),
    L.serial(L.Conv(8, (3, 3)), L.Relu(), L.ImageResize((-1, -1, 4, 4), "linear"), L.Flatten()),
])
def test_error_unsupported_architecture(net):
    x = _images(2, (2, 6, 6))
    with pytest.raises(ValueError, match=r"spatial_blocking.*cannot handle this architecture"):
        net.kernel_fn(x, spatial_blocking=True)
    with pytest.raises(ValueError, match=r"`max_memory`.*Spatial blocking.*does not apply"):
        net.kernel_fn(x, max_memory="20KB")


def test_error_budget_too_small_for_one_band():
    net = CASES["conv_relu_gap"][0]()
    with pytest.raises(ValueError, match=r"`max_memory`.*too small even for spatial blocking"):
        net.kernel_fn(_images(2, (2, 12, 12)), max_memory="20KB")


@pytest.mark.parametrize("bad", [0, -2, 1.5, "yes"])
def test_error_bad_option(bad):
    net = CASES["conv_relu_gap"][0]()
    with pytest.raises(ValueError, match="`spatial_blocking`"):
        net.kernel_fn(_images(2, (2, 6, 6)), spatial_blocking=bad)


def test_error_incompatible_inputs_and_modes():
    net = CASES["conv_relu_gap"][0]()
    with pytest.raises(ValueError, match="diagonal_spatial=True"):
        L.serial(L.Conv(8, (3, 3)), L.Relu(), L.Flatten()).kernel_fn(
            _images(2, (2, 6, 6)), diagonal_spatial=True, spatial_blocking=True)
    with pytest.raises(ValueError, match="image inputs"):
        L.serial(L.Dense(8), L.Relu(), L.Flatten()).kernel_fn(_images(2, (5,)), spatial_blocking=True)
    with pytest.raises(ValueError, match="`x1`/`x2` have 1"):
        net.kernel_fn(_images(2, (2, 6)), spatial_blocking=True)
    with pytest.raises(ValueError, match="`filter_shape` 3 is larger"):
        L.serial(L.Conv(8, (3, 3)), L.Relu(), L.GlobalAvgPool()).kernel_fn(
            _images(2, (2, 2, 6)), spatial_blocking=True)


def test_peak_measure_sees_allocations():
    """PeakBytes (the planner's probe) measures what a computation holds at once."""
    probe = PeakBytes(torch.device("cpu"))
    if probe.peak is None:
        pytest.skip("allocator statistics not available here")
    with probe:
        a = torch.ones(1_000_000, dtype=DT)
        b = a * 2
        del a, b
        c = torch.ones(100_000, dtype=DT)
    assert 16e6 <= probe.peak < 17e6 and c.numel() == 100_000


# ---- band geometry ------------------------------------------------------------------------

def test_halo_and_runs():
    from widelimit.scale.bands import back_indices, shift_runs
    # 3-tap SAME conv (lo=1) on 8 positions: rows 0..1 need 0..2 (position -1 is padding)
    assert back_indices([0, 1], 8, 3, 1, 1, False) == [0, 1, 2]
    # CIRCULAR wraps the halo around: rows 0..1 need 7, 0, 1, 2
    assert back_indices([0, 1], 8, 3, 1, 1, True) == [0, 1, 2, 7]
    # stride 2, VALID, window 2: rows 1..2 need 2..5
    assert back_indices([1, 2], 8, 2, 2, 0, False) == [2, 3, 4, 5]
    # for d = 0 output row 0 reads 7 (the last input slot), row 1 reads 0: two runs
    runs = shift_runs([0, 1], [0, 1, 2, 7], 8, 3, 1, 1, True)
    assert runs[0] == [(0, 3, 1, 1), (1, 0, 1, 1)]
    assert runs[1] == [(0, 0, 2, 1)] and runs[2] == [(0, 1, 2, 1)]
    # zero padding: row 0 has no source for d = 0
    assert shift_runs([0, 1], [0, 1, 2], 8, 3, 1, 1, False)[0] == [(1, 0, 1, 1)]
    # strided source runs
    assert shift_runs([1, 2], [2, 3, 4, 5], 8, 2, 2, 0, False) == [[(0, 0, 2, 2)], [(0, 1, 2, 2)]]


def test_automatic_fallback_when_the_measured_pair_is_larger(monkeypatch):
    """Quadrature nonlinearities hold (pair x nodes) tensors: the geometry's estimate says
    one pair fits, the pair planner's probe says it does not; bands are used then."""
    net = CASES["conv1d"][0]()
    x1, x2 = _images(3, (3, 11), 1), _images(2, (3, 11), 2)
    ref = net.kernel_fn(x1, x2, spatial_blocking=False)
    budget = 200_000          # one pair by the geometry: ~30 KB; measured: ~600 KB
    with pytest.raises(ValueError, match="max_memory.*spatial_blocking=True"):
        net.kernel_fn(x1, x2, max_memory=budget, spatial_blocking=False)
    calls = []
    original = spatial.spatial_kernel
    monkeypatch.setattr(spatial, "spatial_kernel", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    assert_same(net.kernel_fn(x1, x2, max_memory=budget), ref)
    assert calls


@pytest.mark.parametrize("name", ["conv_relu_gap", "stride2_valid_erf_avgpool_flatten"])
def test_bands_on_threads(name, monkeypatch):
    """Bands on a thread pool (large bands; forced here) give the same kernel."""
    monkeypatch.setattr(spatial, "THREADED_BANDS_FROM", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        build, shape = CASES[name]
        net = build()
        x1, x2 = _images(3, shape, 1), _images(2, shape, 2)
        for b in (None, x2):
            assert_same(net.kernel_fn(x1, b, spatial_blocking=True, max_memory="2MB"),
                        net.kernel_fn(x1, b, spatial_blocking=False))
    finally:
        torch.set_num_threads(threads)


def test_error_masked_inputs():
    net = CASES["conv_relu_gap"][0]()
    x = _images(2, (2, 6, 6))
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    mask[:, -1] = True
    with pytest.raises(ValueError, match="`spatial_blocking` does not support masked inputs"):
        net.kernel_fn(x, mask=mask, spatial_blocking=True)
    with pytest.raises(ValueError, match="`max_memory`.*does not support masked inputs"):
        net.kernel_fn(x, mask=mask, max_memory="20KB")
