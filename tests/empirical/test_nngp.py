"""empirical_nngp and empirical_kernel_fn."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

import widelimit as wl
from tests.empirical.helpers import make_model


def test_nngp_is_mean_inner_product_of_outputs():
    model, shape = make_model("multi_out")
    x1 = torch.randn(4, *shape, dtype=torch.float64)
    x2 = torch.randn(3, *shape, dtype=torch.float64)
    model.train()
    k = wl.empirical_nngp(model, x1, x2)  # trace last axis (4): (4, 3, 3, 3)
    assert model.training
    with torch.no_grad():
        model.eval()
        f1, f2 = model(x1), model(x2)
    want = torch.einsum("iac,jbc->ijab", f1, f2) / 4
    np.testing.assert_allclose(k.numpy(), want.numpy(), atol=1e-12)
    full = wl.empirical_nngp(model, x1, x2, trace_axes=())
    assert full.shape == (4, 3, 3, 3, 4, 4)
    np.testing.assert_allclose(torch.diagonal(full, dim1=4, dim2=5).mean(-1).numpy(),
                               k.numpy(), atol=1e-12)
    both = wl.empirical_nngp(model, x1, x2, trace_axes=(0, 1))
    np.testing.assert_allclose(both.numpy(), (f1.reshape(4, -1) @ f2.reshape(3, -1).T / 12)
                               .numpy(), atol=1e-12)


def test_nngp_of_named_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    model.add_module("features", nn.Identity())
    x = torch.randn(5, 3, dtype=torch.float64)
    k = wl.empirical_nngp(model, x, layer="1")
    with torch.no_grad():
        h = torch.tanh(model[0](x))
    np.testing.assert_allclose(k.numpy(), (h @ h.T / 16).numpy(), atol=1e-12)
    kn = wl.empirical_nngp(model, x.numpy(), layer="1")
    assert isinstance(kn, np.ndarray)


def test_kernel_fn_get_variants():
    model, shape = make_model("mlp")
    x1 = torch.randn(4, *shape, dtype=torch.float64)
    x2 = torch.randn(2, *shape, dtype=torch.float64)
    kfn = wl.empirical_kernel_fn(model, implementation="structured")
    both = kfn(x1, x2)
    assert both._fields == ("nngp", "ntk")
    np.testing.assert_allclose(both.ntk.numpy(), wl.empirical_ntk(model, x1, x2).numpy(),
                               atol=1e-12)
    np.testing.assert_allclose(both.nngp.numpy(), wl.empirical_nngp(model, x1, x2).numpy(),
                               atol=1e-12)
    assert kfn(x1, None, "ntk").shape == (4, 4)
    rev = kfn(x1, x2, get=("ntk", "nngp"))
    assert rev._fields == ("ntk", "nngp")
    untraced = wl.empirical_kernel_fn(model, trace_axes=())(x1, x2, "ntk")
    assert untraced.shape == (4, 2, 3, 3)
