"""linearize and taylor_expand: values, derivatives, training."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp

import widelimit as wl
from tests.empirical.helpers import IMPLS, Scale, make_model



def ntk_mlp(d: int, width: int, out: int = 1, seed: int = 0) -> nn.Module:
    """NTK-parametrised ReLU MLP: y = W x / sqrt(fan_in), W ~ N(0, 1)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for fin, fout in [(d, width), (width, width), (width, out)]:
        lin = nn.Linear(fin, fout, bias=False)
        nn.init.normal_(lin.weight)
        layers += [lin, Scale(1 / math.sqrt(fin)), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).double()


def _shift(module: nn.Module, names, delta) -> None:
    with torch.no_grad():
        for n, p in module.named_parameters():
            p.add_(delta[n.removeprefix("model.")])


def test_linearize_equals_model_at_theta0_and_is_a_copy():
    model, shape = make_model("conv_bn")
    model.train()
    x = torch.randn(4, *shape, dtype=torch.float64)
    lin = wl.linearize(model)
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(lin(x).numpy(), model(x).numpy(), atol=1e-13)
        next(lin.parameters()).add_(1.0)
    assert not torch.allclose(next(lin.parameters()), next(model.parameters()))
    assert len(list(lin.parameters())) == len(list(model.parameters()))


def test_linearize_first_derivative_matches_model():
    model, shape = make_model("multi_out")
    x = torch.randn(3, *shape, dtype=torch.float64)
    lin = wl.linearize(model)
    theta = {n: p.detach() for n, p in model.named_parameters()}
    v = {n: torch.randn_like(p) for n, p in theta.items()}
    _, d_model = jvp(lambda th: functional_call(model, th, (x,)), (theta,), (v,))
    lth = {n: p.detach() for n, p in lin.named_parameters()}
    lv = {n: v[n.removeprefix("model.")] for n in lth}
    _, d_lin = jvp(lambda th: functional_call(lin, th, (x,)), (lth,), (lv,))
    np.testing.assert_allclose(d_lin.detach().numpy(), d_model.detach().numpy(), atol=1e-12)
    # the linear model is exactly linear in theta: f_lin(theta0 + v) = f(theta0) + Df[v]
    _shift(lin, None, v)
    with torch.no_grad():
        want = model(x) + d_model
        np.testing.assert_allclose(lin(x).numpy(), want.numpy(), atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_ntk_of_linearized_model_is_ntk_of_model(impl):
    model, shape = make_model("mlp")
    x = torch.randn(4, *shape, dtype=torch.float64)
    lin = wl.linearize(model)
    _shift(lin, None, {n: 0.3 * torch.randn_like(p) for n, p in model.named_parameters()})
    want = wl.empirical_ntk(model, x, trace_axes=(), implementation="jacobian_contraction")
    got = wl.empirical_ntk(lin, x, trace_axes=(), implementation=impl)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-10)


def test_training_linearized_tracks_wide_network():
    """Lee et al. 2019: at large width, GD on f and on f_lin give close outputs."""
    torch.manual_seed(5)
    x = torch.randn(8, 4, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * 2.0
    y = torch.sin(x.sum(1, keepdim=True))
    x_test = torch.randn(4, 4, dtype=torch.float64)
    model = ntk_mlp(4, 2048, seed=1)
    lin = wl.linearize(model)
    with torch.no_grad():
        f0 = model(x_test).clone()
    for net in (model, lin):
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        for _ in range(10):
            opt.zero_grad()
            loss = 0.5 * ((net(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
    with torch.no_grad():
        f, fl = model(x_test), lin(x_test)
        moved = float((f - f0).norm())
        gap = float((f - fl).norm())
    assert moved > 0.1  # training actually moved the outputs
    assert gap < 0.05 * moved, (gap, moved)


def test_taylor_degree2_matches_second_order_expansion():
    # not "multi_out": torch's forward-over-forward AD of layer_norm is wrong (torch 2.x)
    model, shape = make_model("conv1d")
    for i, m in enumerate(model):
        if isinstance(m, nn.ReLU):
            model[i] = nn.Tanh()
    x = torch.randn(3, *shape, dtype=torch.float64)
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    v = {n: 0.1 * torch.randn_like(p) for n, p in theta.items()}

    def g(t: float) -> torch.Tensor:
        with torch.no_grad():
            return functional_call(model, {n: theta[n] + t * v[n] for n in theta}, (x,))

    h = 1e-4
    d1 = (g(h) - g(-h)) / (2 * h)
    d2 = (g(h) - 2 * g(0.0) + g(-h)) / h ** 2
    t = 0.3
    quad = wl.taylor_expand(model, 2)
    _shift(quad, None, {n: t * v[n] for n in v})
    with torch.no_grad():
        got = quad(x)
    want = g(0.0) + t * d1 + t ** 2 / 2 * d2
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)
    # quadratic beats linear in approximating the model: errors O(t^3) vs O(t^2)
    lin = wl.linearize(model)
    _shift(lin, None, {n: t * v[n] for n in v})
    with torch.no_grad():
        err_q = float((got - g(t)).abs().max())
        err_l = float((lin(x) - g(t)).abs().max())
    assert err_q < 0.2 * err_l


def test_taylor_degree2_is_exact_for_bilinear_model():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 5, bias=False), nn.Linear(5, 2, bias=False)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    quad = wl.taylor_expand(model, 2)
    cubic = wl.taylor_expand(model, 3)
    opt = torch.optim.Adam(quad.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        quad(x).pow(2).sum().backward()
        opt.step()
    trained = {n.removeprefix("model."): p.detach() for n, p in quad.named_parameters()}
    with torch.no_grad():
        want = functional_call(model, trained, (x,))
        np.testing.assert_allclose(quad(x).numpy(), want.numpy(), atol=1e-12)
        cubic.load_state_dict(quad.state_dict())
        np.testing.assert_allclose(cubic(x).numpy(), want.numpy(), atol=1e-12)
    assert wl.taylor_expand(model, 0)(x).shape == (4, 2)
