"""The compiled (fused) path gives the same numbers as the eager rules."""
import pytest
import torch

from widelimit import layers as L
from widelimit.kernels import _compile


@pytest.fixture
def compile_on():
    old = _compile.get_compile()
    _compile.set_compile("on")
    yield
    _compile.set_compile(old)


@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_fused_matches_eager(compile_on, param):
    """Dense+Relu fused (first layer: ntk is a 0-d zero; then a full matrix), standalone
    Erf after a non-Dense layer, with and without bias, both parametrizations."""
    x = torch.randn(40, 12, dtype=torch.float64)
    x2 = torch.randn(30, 12, dtype=torch.float64)
    net = L.serial(L.Dense(64, W_std=1.4, b_std=0.1, parameterization=param), L.Relu(),
                   L.Dense(64, W_std=1.3, b_std=None, parameterization=param), L.Relu(),
                   L.Dense(64, W_std=1.2, b_std=0.3, parameterization=param), L.LayerNorm(), L.Erf(),
                   L.Dense(1, W_std=1.1, b_std=0.1, parameterization=param))
    fused = net.kernel_fn(x, x2, get=("nngp", "ntk"))
    _compile.set_compile("off")
    eager = net.kernel_fn(x, x2, get=("nngp", "ntk"))
    torch.testing.assert_close(fused.nngp, eager.nngp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fused.ntk, eager.ntk, rtol=1e-12, atol=1e-12)


def test_set_compile_validates():
    with pytest.raises(ValueError, match="mode"):
        _compile.set_compile("sometimes")
