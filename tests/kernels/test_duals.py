"""Every closed-form dual agrees with the quadrature path in float64 (1e-8 relative).

The grid covers orthogonal, anti-correlated, nearly collinear (1 - 1e-12) and exactly
collinear inputs with unequal variances.
"""
import math

import pytest
import torch

from widelimit import layers as L
from widelimit.kernels.rules.quadrature import quadrature_dual


pytestmark = pytest.mark.usefixtures("float64_default")


RHO = torch.tensor([-1.0, -0.97, -0.5, 0.0, 0.2, 0.7, 0.999, 1 - 1e-12, 1.0], dtype=torch.float64)
VARS = [(1.0, 1.0), (0.3, 2.2), (1.7, 0.6)]


def grid():
    cs, v1s, v2s = [], [], []
    for a, b in VARS:
        cs.append(RHO * math.sqrt(a * b))
        v1s.append(torch.full_like(RHO, a))
        v2s.append(torch.full_like(RHO, b))
    return torch.cat(cs), torch.cat(v1s), torch.cat(v2s)


CLOSED_FORM = {
    "Relu": L.Relu(), "LeakyRelu": L.LeakyRelu(0.15), "ABRelu": L.ABRelu(-0.4, 1.3), "Abs": L.Abs(),
    "Erf": L.Erf(1.2, 0.7, 0.3), "Sigmoid_like": L.Sigmoid_like(), "Gelu": L.Gelu(), "Sign": L.Sign(),
    "Sin": L.Sin(1.1, 0.8, 0.4), "Cos": L.Cos(0.9, 1.2, 0.1), "Rbf": L.Rbf(0.6), "Gabor": L.Gabor(),
    "Exp": L.Exp(0.8, 0.5), "Gaussian": L.Gaussian(1.0, -0.7),
    "Monomial3": L.Monomial(3), "Monomial5": L.Monomial(5),
    "RectifiedMonomial0": L.RectifiedMonomial(0), "RectifiedMonomial1": L.RectifiedMonomial(1),
    "RectifiedMonomial3": L.RectifiedMonomial(3),
    "Polynomial": L.Polynomial([0.5, -1.0, 0.3, 0.2]),
}
# Derivatives that are Dirac deltas (sign, step) contribute 0 in the closed forms, as in
# neural-tangents; autograd also gives 0 there, so the comparison is still meaningful.


@pytest.mark.parametrize("name", sorted(CLOSED_FORM))
def test_closed_form_matches_quadrature(name):
    layer = CLOSED_FORM[name]
    c, v1, v2 = grid()
    t, t_dot = layer.dual()(c, v1, v2, True)
    q, q_dot = quadrature_dual(layer.fn, n_radial=96, n_angular=48)(c, v1, v2, True)
    scale = torch.sqrt(v1 * v2) + 1
    assert torch.all((t - q).abs() <= 1e-8 * torch.maximum(q.abs(), scale * 1e-3)), (t - q).abs().max()
    assert torch.all((t_dot - q_dot).abs() <= 1e-8 * torch.maximum(q_dot.abs(), scale * 1e-3))


def test_hermite_on_unit_variance():
    rho = RHO
    one = torch.ones_like(rho)
    for n in range(5):
        layer = L.Hermite(n)
        t, t_dot = layer.dual()(rho, one, one, True)
        q, q_dot = quadrature_dual(layer.fn, n_radial=96, n_angular=48)(rho, one, one, True)
        torch.testing.assert_close(t, q, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(t_dot, q_dot, rtol=1e-8, atol=1e-10)


def test_variances_are_the_dual_at_collinear_inputs():
    """The same dual gives cov1: E[phi(u)^2] at c = v1 = v2 (relu: v/2)."""
    v = torch.tensor([0.0, 0.5, 2.0])
    t, _ = L.Relu().dual()(v, v, v, False)
    torch.testing.assert_close(t, v / 2)


def test_elementwise_tanh_works_and_is_odd_symmetric():
    c, v1, v2 = grid()
    t, t_dot = L.Tanh().dual()(c, v1, v2, True)
    t_neg, _ = L.Tanh().dual()(-c, v1, v2, True)
    torch.testing.assert_close(t_neg, -t, rtol=1e-10, atol=1e-12)   # tanh is odd
    assert torch.all(t_dot > 0)                                      # tanh' > 0
    # E[tanh(u)^2] < E[u^2]
    assert torch.all(L.Tanh().dual()(v1, v1, v1, False)[0] < v1)
