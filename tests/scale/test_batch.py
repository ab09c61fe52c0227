"""wl.batch: blocked == unblocked bit for bit (FC, CNN, empirical; float32 / float64; block
sizes that do not divide N), upper triangle only, progress bar, budget errors; scale.grid."""
import numpy as np
import pytest
import torch
from torch import nn

import widelimit as wl
from widelimit import layers as L
from widelimit.scale.grid import Block, blocks

DTYPES = [torch.float32, torch.float64]


def _fc():
    return L.serial(L.Dense(512, W_std=1.5, b_std=0.1), L.Relu(), L.Dense(512), L.Relu(), L.Dense(1))


def _equal(a, b):
    if isinstance(a, tuple):
        assert type(a) is type(b) and a._fields == b._fields
        for u, v in zip(a, b):
            _equal(u, v)
        return
    assert type(a) is type(b) and a.shape == b.shape and a.dtype == b.dtype
    assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [1, 7, 64, 97, 150, 1000])
def test_fc_bit_identical(dtype, block_size):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(150, 20, generator=g, dtype=dtype)
    x2 = torch.randn(61, 20, generator=g, dtype=dtype)
    net = _fc()
    get = ("nngp", "ntk")
    _equal(wl.batch(net.kernel_fn, block_size=block_size)(x, get=get), net.kernel_fn(x, get=get))
    _equal(wl.batch(net.kernel_fn, block_size=block_size)(x, x2, get="ntk"),
           net.kernel_fn(x, x2, get="ntk"))


@pytest.mark.parametrize("block_size", [1, 7, 97])
def test_torch_elementwise_rules_within_one_ulp(block_size):
    """Rules evaluated by torch's vectorised transcendental functions (Erf: atan2, sqrt)
    compute the last elements of a tensor (the SIMD tail) with the scalar function, which
    may differ in the last bit: there blocked and unblocked agree to ~1 ulp, not bit for
    bit (documented limit; native-loop rules such as the ReLU family are bit-identical)."""
    x = torch.randn(150, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    net = L.serial(L.Dense(512, W_std=1.5, b_std=0.1), L.Erf(), L.Dense(1))
    full = net.kernel_fn(x, get="ntk")
    out = wl.batch(net.kernel_fn, block_size=block_size)(x, get="ntk")
    torch.testing.assert_close(out, full, rtol=4e-16, atol=0)
    assert torch.equal(out, out.T)


def test_fc_large_tiled_path_bit_identical():
    """N above the tiling threshold (the unblocked call tiles / runs native loops)."""
    x = torch.randn(900, 30, generator=torch.Generator().manual_seed(1))
    net = _fc()
    full = net.kernel_fn(x, get="ntk")
    for b in (333, 512):
        out = wl.batch(net.kernel_fn, block_size=b)(x, get="ntk")
        assert torch.equal(out, full)
    assert torch.equal(full, full.T)


def test_numpy_in_numpy_out():
    x = np.random.default_rng(0).standard_normal((40, 5))
    net = _fc()
    out = wl.batch(net.kernel_fn, block_size=9)(x, get="nngp")
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, net.kernel_fn(x, get="nngp"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [3, 5, 11])
def test_cnn_bit_identical(dtype, block_size):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(11, 2, 6, 6, generator=g, dtype=dtype)
    x2 = torch.randn(4, 2, 6, 6, generator=g, dtype=dtype)
    net = L.serial(L.Conv(16, (3, 3), padding="SAME"), L.Relu(), L.Conv(16, (3, 3)), L.Relu(),
                   L.GlobalAvgPool(), L.Dense(1))
    get = ("nngp", "ntk")
    _equal(wl.batch(net.kernel_fn, block_size=block_size)(x, get=get), net.kernel_fn(x, get=get))
    _equal(wl.batch(net.kernel_fn, block_size=block_size)(x, x2, get="nngp"),
           net.kernel_fn(x, x2, get="nngp"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_empirical_matches_and_upper_triangle(dtype):
    """Empirical kernels contract Jacobians with a GEMM whose rounding depends on the block
    shape: blocked and unblocked agree to rounding (documented), not bit for bit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 1)).to(dtype)
    kfn = wl.empirical_kernel_fn(model)
    x = torch.randn(23, 6, dtype=dtype)
    calls = []

    def counting(a, b=None, **kw):
        calls.append((a.shape[0], None if b is None else b.shape[0]))
        return kfn(a, b, **kw)

    for b in (4, 10, 23):
        calls.clear()
        full = kfn(x, x, get="ntk")
        out = wl.batch(counting, block_size=b)(x, x, get="ntk")
        torch.testing.assert_close(out, full, rtol=1e-12 if dtype == torch.float64 else 2e-5,
                                   atol=1e-12 if dtype == torch.float64 else 1e-5)
    # x2 None: only blocks on and above the diagonal, lower ones mirrored
    calls.clear()
    out = wl.batch(counting, block_size=10)(x, get=("nngp", "ntk"))
    assert len(calls) == 6 and calls[0] == (10, None)          # 3 x 3 grid, upper triangle
    full = kfn(x, None, get=("nngp", "ntk"))
    torch.testing.assert_close(out.ntk, full.ntk, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-5)
    assert torch.equal(out.ntk[:10, 10:], out.ntk[10:, :10].T)      # mirrored blocks


def test_progress_bar_on_stderr(capsys):
    x = torch.randn(50, 4)
    net = _fc()
    wl.batch(net.kernel_fn, block_size=16, progress=True)(x, get="ntk")
    err = capsys.readouterr().err
    assert "entries/s" in err or "entries]" in err, err
    wl.batch(lambda a, b=None, get="ntk": net.kernel_fn(a, b, get=get), block_size=16,
             progress=True)(x, get="ntk")
    assert "entries" in capsys.readouterr().err


def test_result_too_large_raises_before_allocating():
    x = torch.randn(2000, 3)
    net = _fc()
    with pytest.raises(wl.KernelMemoryError) as e:
        net.kernel_fn(x, get=("nngp", "ntk"), max_memory="1MB")
    assert e.value.needed == 2 * 2000 * 2000 * 4 and e.value.budget == 10**6
    assert "needs 32MB" in str(e.value) and "(1MB)" in str(e.value) and "compute_kernel" in str(e.value) and "wl.batch" in str(e.value)
    assert isinstance(e.value, MemoryError) and isinstance(e.value, ValueError)
    with pytest.raises(wl.KernelMemoryError):
        wl.batch(net.kernel_fn, block_size=100, max_memory="1MB")(x, get="ntk")


def test_budget_smaller_than_one_block():
    x = torch.randn(100, 3)
    net = _fc()
    # the result (40 KB) fits 300 KB, a block of 256^2 pairs does not
    with pytest.raises(wl.KernelMemoryError, match="smaller than one block"):
        wl.batch(net.kernel_fn, block_size=256, max_memory="300KB")(x, get="ntk")
    # without block_size the largest block that fits is chosen, same numbers
    out = wl.batch(net.kernel_fn, max_memory="300KB")(x, get="ntk")
    assert torch.equal(out, net.kernel_fn(x, get="ntk"))
    with pytest.raises(wl.KernelMemoryError, match="smaller than one block"):
        wl.batch(net.kernel_fn, max_memory="41KB")(x, get="ntk")


def test_budget_message_is_consistent():
    """issue 17: max_memory="300KB" on a small FC kernel: the numbers in the message add up."""
    x = torch.randn(200, 3)
    net = _fc()
    with pytest.raises(wl.KernelMemoryError) as e:
        net.kernel_fn(x, get="ntk", max_memory="300KB")
    msg = str(e.value)
    # nngp and ntk states (2 x 200 x 200 x 4 B) + the inputs (200 x 3 x 4 B) + one pair
    assert "`max_memory`=300KB" in msg and "the result 320KB" in msg and "the inputs 2.4KB" in msg
    assert e.value.budget == 300_000 and e.value.needed > 322_400
    assert f"at least {e.value.needed / 1000:.3g}KB" in msg, msg
    out = net.kernel_fn(x, get="ntk", max_memory="2MB")
    torch.testing.assert_close(out, net.kernel_fn(x, get="ntk"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", ["nan", "inf", "-1GB", float("nan"), float("inf"), -5, 0, "lots"])
def test_bad_max_memory(bad):
    net = _fc()
    with pytest.raises(ValueError, match="max_memory"):
        wl.batch(net.kernel_fn, max_memory=bad)
    with pytest.raises(ValueError, match="max_memory"):
        net.kernel_fn(torch.randn(3, 2), max_memory=bad)
    with pytest.raises(ValueError, match="max_memory"):
        wl.scale.parse_memory(bad)


def test_parse_memory():
    from widelimit.scale.memory import parse_memory
    assert parse_memory("4GB") == 4 * 10**9 and parse_memory("300KB") == 300_000
    assert parse_memory("512MiB") == 512 * 2**20 and parse_memory(1234) == 1234


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_block_size(bad):
    with pytest.raises(ValueError, match="block_size"):
        wl.batch(_fc().kernel_fn, block_size=bad)


def test_get_none_refused():
    with pytest.raises(ValueError, match="get"):
        wl.batch(_fc().kernel_fn, block_size=4)(torch.randn(5, 2), get=None)


def test_grid():
    g = blocks(5, 5, 2, symmetric=True)
    assert [(b.i, b.j) for b in g] == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    assert g[2] == Block(0, 2, slice(0, 2), slice(4, 5)) and g[0].diagonal and not g[1].diagonal
    g = blocks(3, 5, 2, symmetric=False)
    assert len(g) == 6 and g[-1].rows == slice(2, 3) and g[-1].cols == slice(4, 5)
    covered = np.zeros((7, 4), int)
    for b in blocks(7, 4, 3, False):
        covered[b.rows, b.cols] += 1
    assert (covered == 1).all()
    with pytest.raises(ValueError, match="block_size"):
        blocks(3, 3, 0, True)
    with pytest.raises(ValueError):
        blocks(3, 4, 2, True)
