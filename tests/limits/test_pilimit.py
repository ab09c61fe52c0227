"""pi-limit expectations against Monte Carlo (float64) and bad input.  The finite -> limit
convergence test is NOT yet included (see the branch report)."""
import pytest
import torch

from widelimit.limits.pilimit import PiLimit
from widelimit.limits.pinet import PiNet
from widelimit.limits.pi_expect import quadrature_expectations, relu_expectations


@pytest.mark.parametrize("which", ["relu", "relu_quad", "tanh_quad"])
def test_expectations_match_monte_carlo(which):
    e, fn = {"relu": (relu_expectations(), torch.relu),
             "relu_quad": (quadrature_expectations(torch.relu, 80), torch.relu),
             "tanh_quad": (quadrature_expectations(torch.tanh), torch.tanh)}[which]
    gen = torch.Generator().manual_seed(0)
    r = 4
    a, b = torch.randn(3, r, generator=gen, dtype=torch.float64), torch.randn(5, r, generator=gen, dtype=torch.float64)
    w, u = torch.randn(3, 5, generator=gen, dtype=torch.float64), torch.randn(3, r, generator=gen, dtype=torch.float64)
    g = torch.randn(400_000, r, generator=gen, dtype=torch.float64)
    ga = (g @ a.T).requires_grad_(True)
    d = torch.autograd.grad(fn(ga).sum(), ga)[0]
    ga, fb = ga.detach(), fn(g @ b.T)
    tol = 0.03                                    # ~6 MC standard errors at 4e5 samples
    assert torch.allclose(e.kernel(a, b), fn(ga).T @ fb / len(g), atol=tol)
    assert torch.allclose(e.mean_gphi(a), fn(ga).T @ g / len(g), atol=tol)
    assert torch.allclose(e.jac_contract(a, b, w), torch.einsum("ni,nm,nr,im->ir", d, fb, g, w) / len(g), atol=tol)
    assert torch.allclose(e.mean_dphi_gg(a, u), torch.einsum("ni,nr,ns,is->ir", d, g, g, u) / len(g), atol=tol)


def test_relu_closed_forms_equal_quadrature():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.randn(6, 3, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    q, c = quadrature_expectations(torch.relu, 200), relu_expectations()
    assert torch.allclose(q.kernel(a, b), c.kernel(a, b), atol=2e-3)
    assert torch.allclose(q.jac_contract(a, b, w), c.jac_contract(a, b, w), atol=2e-2)


def test_bad_input():
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    lim = PiLimit(5, 2, depth=2, rank=4)
    with pytest.raises(ValueError, match="d_in=5"):
        lim.fit(torch.randn(8, 4, dtype=torch.float64), y, lr=0.1, steps=2)
    with pytest.raises(ValueError, match="rank"):
        PiLimit(5, 2, rank=0)
    with pytest.raises(ValueError, match="phi"):
        PiLimit(5, 2, phi="tanh")
    with pytest.raises(RuntimeError, match="not fitted"):
        PiNet(5, 2, 16).predict(x)
    lim.fit(x, y, lr=0.1, steps=2)
    with pytest.raises(ValueError, match="d_in=5"):
        lim.predict(torch.randn(3, 6, dtype=torch.float64))
