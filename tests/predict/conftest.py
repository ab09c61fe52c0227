import pytest
import torch

from widelimit import layers as L


def fc_net(width=512, depth=2, W_std=1.5, b_std=0.1):
    layers = []
    for _ in range(depth):
        layers += [L.Dense(width, W_std=W_std, b_std=b_std), L.Relu()]
    return L.serial(*layers, L.Dense(1, W_std=W_std, b_std=b_std))


@pytest.fixture(autouse=True)
def _one_thread():
    """These problems are tiny (tens of points): one intra-op thread avoids OpenMP spin-waits
    that dominate when the cores are shared (measured 19 s vs 0.05 s for 5000 20x20 steps)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def problem():
    """A small float64 regression problem with analytic NNGP/NTK kernels."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(20, 5, generator=g, dtype=torch.float64)
    xt = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.stack([torch.sin(x.sum(1)), torch.cos(x[:, 0])], 1)
    net = fc_net()
    kd = net.kernel_fn(x, None, get=("nngp", "ntk"))
    ktd = net.kernel_fn(xt, x, get=("nngp", "ntk"))
    ktt = net.kernel_fn(xt, None, get=("nngp", "ntk"))
    return dict(net=net, x=x, xt=xt, y=y, kd=kd, ktd=ktd, ktt=ktt)
