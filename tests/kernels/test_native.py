"""The numba loops of widelimit.kernels._native against the torch rules they replace.

Tolerances: the loops use Cephes' atan polynomial (float32, 2.8e-7 absolute) and rational
function (float64, 1 ulp), so float64 results agree with the torch rules to ~1e-14 and
float32 ones to a few float32 ulps.
"""
import math

import numpy as np
import pytest
import torch

import widelimit.layers as L
from widelimit.kernels import _native
from widelimit.kernels.rules.relu import abrelu_dual

pytestmark = pytest.mark.skipif(not _native.available(), reason="numba not installed")


@pytest.fixture
def torch_rules():
    """Run a block with the native loops switched off."""
    class Off:
        def __enter__(self):
            _native.set_native("off")

        def __exit__(self, *exc):
            _native.set_native("auto")
    return Off()


def _theta(y, x):
    """theta = atan2(y, x) through the ABRelu loop: with f = 1, ab = 0 and the identity
    affine map, T_dot = pi - theta; the variance product is chosen so that
    sqrt(v1 v2 shrink - x^2) = y (up to rounding)."""
    prm = np.array([1.0, 0.0, 1.0 - 4 * np.finfo(y.dtype).eps, 1.0, 0.0, 0.0, 1.0, 0.0, math.pi],
                   dtype=y.dtype)
    c = x.reshape(1, -1)
    p = ((y * y + x * x) / prm[2]).reshape(1, -1)
    out, t_dot = np.empty_like(c), np.empty_like(c)
    _native._kernels().abrelu_flat(c, np.ones_like(c), p, out, t_dot, prm, True, 0, 1)
    return math.pi - t_dot.reshape(-1).astype(np.float64)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1.2e-6), (np.float64, 1e-14)])
def test_theta_matches_atan2_over_all_quadrants(dtype, tol):
    rng = np.random.default_rng(0)
    ang = np.concatenate([rng.uniform(0, np.pi, 4000), [0.0, np.pi / 8, np.pi / 4, 3 * np.pi / 8,
                                                         np.pi / 2, 3 * np.pi / 4, np.pi, 1e-4,
                                                         np.pi - 1e-4]])
    r = rng.uniform(0.1, 10, ang.size)
    x, y = (r * np.cos(ang)).astype(dtype), (r * np.sin(ang)).astype(dtype)
    y = np.abs(y)
    want = np.arctan2(y.astype(np.float64), x.astype(np.float64))
    got = _theta(y, x)
    # theta comes back through sqrt(p - c^2): compare where that radicand is well conditioned
    ok = np.abs(np.sin(ang)) > 0.05
    assert np.max(np.abs(got - want)[ok]) < tol * 10


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ab", [(0.0, 1.0), (0.1, 1.0), (-1.0, 1.0), (0.5, -2.0)])
def test_abrelu_pass_equals_torch_dual(dtype, ab):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(70, 30, generator=g, dtype=dtype)
    x[5] = 2 * x[3]                                       # a collinear pair
    c = x @ x.T / 30
    v = c.diagonal().clone()
    ntk = c * 1.3 + 0.2
    aff = (1.7, 0.3, 0.9, 1.1, 0.05)                      # alpha, beta, gamma, delta, eps
    ca, va = aff[0] * c + aff[1], aff[0] * v + aff[1]
    t, t_dot = abrelu_dual(*ab)(ca.double(), va[:, None].double(), va[None, :].double(), True)
    want_ntk = (aff[2] * c + aff[3] * ntk + aff[4]).double() * t_dot
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    for layout in ("rows", "flat"):
        args = (c, ntk, va[:, None], va[None, :]) if layout == "rows" else \
            (c[..., None], ntk[..., None], va[:, None, None], va[None, :, None])
        got, got_ntk = _native.abrelu_pass(ab, *args, affine=aff)
        assert got.dtype == dtype
        assert torch.allclose(got.reshape(70, 70).double(), t, rtol=0, atol=tol * t.abs().max())
        assert torch.allclose(got_ntk.reshape(70, 70).double(), want_ntk, rtol=0,
                              atol=tol * want_ntk.abs().max())
    up, up_ntk = _native.abrelu_pass(ab, c, ntk, va[:, None], va[None, :], aff, upper=True)
    full, _ = _native.abrelu_pass(ab, c, ntk, va[:, None], va[None, :], aff)
    assert torch.equal(up.triu(), full.triu()) and not up.tril(-1).any() and not up_ntk.tril(-1).any()


@pytest.mark.parametrize("n", [1, 7, 9, 300, 1001])
def test_mirror_upper(n):
    a = torch.randn(n, n)
    m = _native.mirror_upper(a)
    assert torch.equal(m, a.triu() + a.triu(1).T)
    b = a.clone().numpy()                              # in place, below the diagonal only
    _native._kernels().mirror_upper(b, b, True, 0, n)
    assert torch.equal(torch.from_numpy(b), m)
    # row ranges that do not start on a band of 8 rows write those rows and nothing else
    mid = min(n // 2 + 5, n)
    for r0, r1 in ((0, n // 3), (n // 3, mid), (mid, n)):
        out = torch.zeros(n, n)
        _native._kernels().mirror_upper(a.numpy(), out.numpy(), False, r0, r1)
        assert torch.equal(out[r0:r1], m[r0:r1]) and not out[:r0].any() and not out[r1:].any()


def test_chunks():
    torch.set_num_threads(2)
    spans = _native._chunks(1000, 10**6, triangle="upper")
    work = [sum(1000 - i for i in range(lo, hi)) for lo, hi in spans]
    assert spans[0][0] == 0 and spans[-1][1] == 1000 and max(work) / min(work) < 1.01
    spans = _native._chunks(1000, 10**6, triangle="lower")
    work = [sum(i for i in range(lo, hi)) for lo, hi in spans]
    assert spans[0][0] == 0 and spans[-1][1] == 1000 and max(work) / min(work) < 1.01


FC_NETS = {
    "relu_ntk": lambda: L.serial(L.Dense(64, W_std=1.5, b_std=0.05), L.Relu(),
                                 L.Dense(64, W_std=1.3, b_std=0.2), L.Relu(), L.Dense(1, W_std=1.5)),
    "leaky_standard": lambda: L.serial(
        L.Dense(64, W_std=1.5, b_std=0.1, parameterization="standard"), L.LeakyRelu(0.1),
        L.Dense(32, W_std=1.2, b_std=None, parameterization="standard"), L.Abs(),
        L.Dense(1, W_std=1.0, b_std=0.3, parameterization="standard")),
    "erf_in_between": lambda: L.serial(L.Dense(64, W_std=1.5, b_std=0.05), L.Relu(),
                                       L.Dense(64, W_std=1.5), L.Erf(), L.Dense(64), L.Relu(),
                                       L.Dense(1)),
    # the branches share the input kernel: no chain may overwrite it (Kernel.scratch)
    "branches": lambda: L.serial(L.FanOut(2), L.parallel(
        L.serial(L.Dense(64, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(8)),
        L.serial(L.Dense(64, W_std=0.7), L.Abs(), L.Dense(8))), L.FanInSum()),
    "deep": lambda: L.serial(*[m for _ in range(12) for m in (L.Dense(64, W_std=1.4, b_std=0.1),
                                                              L.Relu())], L.Dense(1)),
}


@pytest.mark.parametrize("name", sorted(FC_NETS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vector_kernels_equal_torch_rules(name, dtype, torch_rules):
    net = FC_NETS[name]()
    g = torch.Generator().manual_seed(2)
    x1 = torch.randn(600, 20, generator=g, dtype=dtype)     # above the tiling threshold
    x2 = torch.randn(150, 20, generator=g, dtype=dtype)
    x1[7] = x1[3]
    got = [net.kernel_fn(x1, get=("nngp", "ntk")), net.kernel_fn(x1, x2, get=("nngp", "ntk"))]
    with torch_rules:
        want = [net.kernel_fn(x1, get=("nngp", "ntk")), net.kernel_fn(x1, x2, get=("nngp", "ntk"))]
    tol = 1e-13 if dtype == torch.float64 else 3e-6
    for g_, w_ in zip(got, want):
        for a, b in zip(g_, w_):
            assert a.dtype == dtype
            assert ((a - b).abs().max() / b.abs().max()).item() < tol
    nngp, ntk = got[0]
    assert torch.equal(nngp, nngp.T) and torch.equal(ntk, ntk.T)      # exactly symmetric
    k = net.kernel_fn(x1)
    assert not k.upper
    if name != "erf_in_between":          # every layer native: diagonal = variances, bit for bit
        assert torch.equal(k.nngp.diagonal(), k.cov1)


def test_native_not_used_with_gradients():
    net = FC_NETS["relu_ntk"]()
    x = torch.randn(40, 20, dtype=torch.float64, requires_grad=True)
    assert not _native.applies(x)
    nngp = net.kernel_fn(x, get="nngp")
    nngp.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_set_native_validates():
    with pytest.raises(ValueError, match="`mode` must be one of"):
        _native.set_native("fast")
    assert _native.get_native() == "auto"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_abrelu_pass_in_memory_order_of_permuted_kernels(dtype):
    """An einsum result (a, b, p, s) stored as (a, p, b, s), and one stored interleaved
    (a, b, s, p): the same values as on contiguous copies, in the input's strides."""
    g = torch.Generator().manual_seed(3)
    f = torch.randn(6, 5, 4, generator=g, dtype=dtype)                 # (N, P, C)
    c_apbs = torch.einsum("apc,bsc->apbs", f, f) / 4
    d = torch.einsum("apc,apc->ap", f, f) / 4
    v1, v2 = d[:, None, :, None], d[None, :, None, :]
    for c in (c_apbs.permute(0, 2, 1, 3), c_apbs.permute(0, 2, 3, 1).contiguous().permute(0, 1, 3, 2)):
        ntk = 2 * c + 0.1
        got = _native.abrelu_pass((0.0, 1.0), c, ntk, v1, v2)
        want = _native.abrelu_pass((0.0, 1.0), c.contiguous(), ntk.contiguous(), v1, v2)
        t, _ = abrelu_dual(0.0, 1.0)(c.double(), v1.double(), v2.double(), True)
        assert got[0].stride() == c.stride()
        for a, b in zip(got, want):
            assert torch.equal(a, b)
        assert torch.allclose(got[0].double(), t, rtol=0, atol=3e-6 * t.abs().max())


POOL_NETS = {
    # attention on raw tokens: the kernel comes out in the (x1, p, x2, q) layout of a product
    "attention": (lambda: L.serial(
        L.GlobalSelfAttention(16, 16, 16, 2, W_key_std=1.1, W_value_std=1.2, W_query_std=0.9,
                              W_out_std=1.0), L.Relu(), L.GlobalAvgPool(), L.Dense(1)), (7, 6, 5)),
    # 2-D images: (x1, x2, h, h', w, w') in memory, spatial pairs interleaved
    "cnn_sum": (lambda: L.serial(
        L.Conv(6, (3, 3), padding="SAME", W_std=1.5, b_std=0.05), L.Relu(),
        L.Conv(6, (2, 3), padding="SAME", W_std=1.3, b_std=0.1), L.LeakyRelu(-0.3),
        L.GlobalSumPool(), L.Dense(1)), (5, 3, 5, 4)),
    "conv1d_abs": (lambda: L.serial(
        L.Conv(6, (3,), padding="CIRCULAR", W_std=1.4, b_std=0.2), L.Abs(), L.GlobalAvgPool()),
     (6, 2, 9)),
}


@pytest.mark.parametrize("name", sorted(POOL_NETS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nonlinearity_then_global_pool_equals_torch_rules(name, dtype, torch_rules, monkeypatch):
    """Rectifier + global pooling in one native pass (fused.native_pool), x1 against
    itself (half the pairs, mirrored) and against x2, against the separate torch rules."""
    build, shape = POOL_NETS[name]
    net = build()
    g = torch.Generator().manual_seed(4)
    x1 = torch.randn(*shape, generator=g, dtype=dtype)
    x2 = torch.randn(3, *shape[1:], generator=g, dtype=dtype)
    x1[4] = x1[1]                                   # a duplicated input: a collinear pair
    calls = []
    real = _native.abrelu_pool
    monkeypatch.setattr(_native, "abrelu_pool", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    kw = dict(get=("nngp", "ntk"), diagonal_spatial=False)
    got = [net.kernel_fn(x1, **kw), net.kernel_fn(x1, x2, **kw)]
    assert [c["symmetric"] for c in calls] == [True, False]
    with torch_rules:
        want = [net.kernel_fn(x1, **kw), net.kernel_fn(x1, x2, **kw)]
    # the collinear pair: sqrt(v1 v2 - c^2) of a cancelled radicand turns rounding
    # differences of 1e-16 into ~1e-10 there; elsewhere the two agree to ~1e-15
    tol = 1e-9 if dtype == torch.float64 else 2e-6
    for g_, w_ in zip(got, want):
        for a, b in zip(g_, w_):
            assert a.dtype == dtype and a.shape == b.shape
            assert ((a - b).abs().max() / b.abs().max()).item() < tol
    nngp, ntk = got[0]
    assert torch.equal(nngp, nngp.T) and torch.equal(ntk, ntk.T)
    k = net.kernel_fn(x1, diagonal_spatial=False)          # cov1: the diagonal, bit for bit
    assert torch.equal(k.cov1, k.nngp.diagonal())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_abrelu_pool_in_every_memory_order(dtype):
    """The pooled sums of one kernel stored as (a, b, p, q), as (a, p, b, q) (a product of
    factors) and in an order the loop does not take (copied): all equal the sum of the
    torch dual's (T, T_dot ntk) over the positions."""
    g = torch.Generator().manual_seed(5)
    f = torch.randn(5, 7, 4, generator=g, dtype=dtype)                  # (N, P, C)
    c_apbq = torch.einsum("apc,bqc->apbq", f, f) / 4
    d = torch.einsum("apc,apc->ap", f, f) / 4
    v1, v2 = d[:, None, :, None], d[None, :, None, :]
    c = c_apbq.permute(0, 2, 1, 3)                                       # (a, b, p, q) view
    ntk = (1.5 * c + 0.2).contiguous()
    t, t_dot = abrelu_dual(0.0, 1.0)(c.double(), v1.double(), v2.double(), True)
    want = (t.sum((2, 3)), (t_dot * ntk.double()).sum((2, 3)))
    # float32 against a float64 reference: at p = q of a = b the radicand v1 v2 - c^2
    # cancels, and its float32 rounding (1e-7) becomes ~3e-4 of that one entry's delta
    tol = 1e-13 if dtype == torch.float64 else 2e-5
    for layout in (c, c.contiguous(), c.permute(2, 0, 1, 3).contiguous().permute(1, 2, 0, 3)):
        for symmetric in (False, True):
            got = _native.abrelu_pool((0.0, 1.0), layout, ntk, v1, v2, symmetric=symmetric)
            for a, b in zip(got, want):
                assert a.dtype == dtype
                assert ((a.double() - b).abs().max() / b.abs().max()).item() < tol
    # without an NTK, and with the zero NTK of raw inputs folded into the affine map
    assert _native.abrelu_pool((0.0, 1.0), c, None, v1, v2)[1] is None
    zero = _native.abrelu_pool((0.0, 1.0), c, torch.zeros((), dtype=dtype), v1, v2)[1]
    assert torch.equal(zero, torch.zeros_like(zero))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b_std", [None, 0.3])
def test_attention_relu_pool_from_factor_rows(dtype, b_std, torch_rules, monkeypatch):
    """Attention on raw inputs, ReLU and GlobalAvgPool of x1 against itself: F F^T by
    syrk (upper triangle, diagonal blocks completed) and the maps to nngp' / ntk' inside
    the pooled loop (fused.native_attention_pool), against the torch rules."""
    net = L.serial(L.GlobalSelfAttention(32, 32, 32, 2, W_key_std=1.1, W_value_std=1.2,
                                         W_query_std=0.9, W_out_std=1.0, b_std=b_std),
                   L.Relu(), L.GlobalAvgPool(), L.Dense(1, W_std=1.5, b_std=0.05))
    g = torch.Generator().manual_seed(6)
    x = torch.randn(12, 16, 7, generator=g, dtype=dtype)          # 84 rows: syrk applies
    affines = []
    real = _native.abrelu_pool
    monkeypatch.setattr(_native, "abrelu_pool",
                        lambda *a, **kw: affines.append(kw["affine"]) or real(*a, **kw))
    got = net.kernel_fn(x, get=("nngp", "ntk"))
    b2 = 0.0 if b_std is None else b_std ** 2
    assert affines == [(1.0, b2, 2.0, 0.0, b2)]                   # the factor-row path ran
    with torch_rules:
        want = net.kernel_fn(x, get=("nngp", "ntk"))
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    for a, b in zip(got, want):
        assert a.dtype == dtype
        assert ((a - b).abs().max() / b.abs().max()).item() < tol
        assert torch.equal(a, a.T)
    k = net.kernel_fn(x)
    assert torch.equal(k.cov1, k.nngp.diagonal())
    assert net.kernel_fn(x, get="nngp").shape == (12, 12)          # without an NTK
