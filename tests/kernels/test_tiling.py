"""Kernels of vector inputs are computed in tiles (widelimit.scale.blocking.vector_plan):
the tiled result equals one big block, is exactly symmetric, and is differentiable."""
import pytest
import torch

from widelimit import layers as L
from widelimit.scale import blocking

DT = torch.float64


@pytest.fixture
def small_tiles(monkeypatch):
    """Tile from 100 entries on, 7 rows a tile, so small inputs exercise the tiled path."""
    monkeypatch.setattr(blocking, "VECTOR_TILED_FROM", 100)
    monkeypatch.setattr(blocking, "VECTOR_TILE", 7)


@pytest.fixture
def no_tiles(monkeypatch):
    monkeypatch.setattr(blocking, "VECTOR_TILED_FROM", 10**12)


def _net(w=1.4):
    return L.serial(L.Dense(64, W_std=w, b_std=0.1), L.Relu(), L.Dense(64, W_std=1.3), L.Erf(),
                    L.Dense(1, W_std=1.1, b_std=0.2))


def test_vector_plan_grid():
    assert blocking.vector_plan(100, None, 2) == blocking.Plan(100, 100, 1, 1, 0)   # small: one block
    p = blocking.vector_plan(4000, None, 2)
    assert p.b1 == p.b2 and p.b1 <= blocking.VECTOR_TILE and -(-4000 // p.b1) in (8, 9)
    p = blocking.vector_plan(1000, None, 2)        # 2x2 grid = 3 tiles for 2 threads: use 3x3
    assert p.b1 == 334
    p = blocking.vector_plan(3000, 700, 2)
    assert p.b1 <= blocking.VECTOR_TILE and p.b2 == 350


@pytest.mark.parametrize("same", [True, False])
def test_tiled_equals_one_block(small_tiles, same, monkeypatch):
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(30, 5, generator=g, dtype=DT)
    x2 = None if same else torch.randn(17, 5, generator=g, dtype=DT)
    net = _net()
    calls = []
    orig = blocking._assemble
    monkeypatch.setattr(blocking, "_assemble", lambda *a, **k: calls.append(1) or orig(*a, **k))
    tiled = net.kernel_fn(x1, x2)
    assert calls, "the tiled path was not taken"
    monkeypatch.setattr(blocking, "VECTOR_TILED_FROM", 10**12)
    whole = net.kernel_fn(x1, x2)
    for name in ("nngp", "ntk"):
        # the input Gram matrix of a tile is a smaller GEMM: last-bit differences only
        torch.testing.assert_close(getattr(tiled, name), getattr(whole, name), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(tiled.cov1, whole.cov1, rtol=1e-14, atol=0)
    if same:
        assert torch.equal(tiled.nngp, tiled.nngp.T) and torch.equal(tiled.ntk, tiled.ntk.T)
    assert tiled.nngp.shape == (30, 30 if same else 17) and tiled.shape1 == whole.shape1


def test_tiled_gradient(small_tiles):
    x = torch.randn(20, 4, dtype=DT, generator=torch.Generator().manual_seed(1))
    w = torch.tensor(1.4, dtype=DT, requires_grad=True)
    _net(w).kernel_fn(x, None, get="ntk").sum().backward()
    tiled, w.grad = w.grad.clone(), None
    blocking.VECTOR_TILED_FROM = 10**12   # restored by the fixture
    _net(w).kernel_fn(x, None, get="ntk").sum().backward()
    torch.testing.assert_close(tiled, w.grad, rtol=1e-12, atol=0)
