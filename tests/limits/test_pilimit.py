"""pi-limit: expectations against Monte Carlo (float64), the limit's step against autograd
and a closed form, finite pi-nets converging to the limit, bad input."""
import math

import pytest
import torch

from widelimit.limits._common import DivergenceError, mse
from widelimit.limits.pilimit import PiLimit, pi_initial_matrices
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


def _data(n=4, d=3, seed=5):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=gen, dtype=torch.float64),
            torch.randn(n, 1, generator=gen, dtype=torch.float64))


def test_limit_step_is_gradient_of_limit_forward():
    """The limit's backward pass (module docstring of pilimit: p^L, p^{l-1}) is exactly
    autograd of its forward pass in the representations: p^l_i = dL/dc^l_i, dA = -lr dL/dA."""
    x, y = _data(3)
    lim = PiLimit(3, 1, depth=3, rank=4).fit(x, y, lr=0.3, steps=3)
    e, A = lim.expect, lim.A_.clone().requires_grad_(True)
    cs = [x @ A.T]
    for b, (cst, q) in zip(lim.b, lim.stored_):
        cs.append(e.mean_gphi(cs[-1]) @ b.T + e.kernel(cs[-1], cst) @ q)
    c_l, a = lim.readout_
    grads = torch.autograd.grad(mse(e.kernel(cs[-1], c_l) @ a, y), [A] + cs)
    a_before, lr = lim.A_.clone(), 0.1
    lim._step(x, y, lr)
    assert torch.allclose((a_before - lim.A_) / lr, grads[0], atol=1e-13)
    for l in range(2):
        assert grads[l + 2].abs().max() > 1e-3
        assert torch.allclose(-lim.stored_[l][1][-3:] / lr, grads[l + 2], atol=1e-13)


def _arccos1(a, b):
    """Cho & Saul's order-1 arc-cosine kernel E[relu(g.a) relu(g.b)], written out here."""
    na, nb = a.norm(dim=1)[:, None], b.norm(dim=1)[None, :]
    th = torch.arccos(((a @ b.T) / (na * nb)).clamp(-1, 1))
    return na * nb * (torch.sin(th) + (math.pi - th) * torch.cos(th)) / (2 * math.pi)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_first_step_closed_form(depth):
    """V_0 = 0, so f_0 = 0, all p = 0 and one step gives f_1(x) = (lr / (B K)) sum_i y_i
    K(c_i, c(x)) with c = B^L/2 ... B^2/2 A_0 x (ReLU: k(c) = c/2) and K the arc-cosine
    kernel; the pi-net at width 4096 agrees to its O(n^{-1/2}) noise."""
    x, y = _data(4)
    xt = torch.randn(3, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    lim = PiLimit(3, 1, depth=depth, rank=4)
    a0, bs = pi_initial_matrices(3, 4, depth)
    c, ct = x @ a0.T, xt @ a0.T
    for b in bs:
        c, ct = c @ b.T / 2, ct @ b.T / 2
    lr = 0.7
    expect = lr / 4 * _arccos1(torch.cat([c, ct]), c) @ y                   # B K = 4
    lim.fit(x, y, lr=lr, steps=1)
    assert torch.allclose(lim.predict(torch.cat([x, xt])), expect, rtol=1e-12, atol=1e-15)
    assert torch.allclose(lim.A_, a0) and all(q.abs().max() == 0 for _, q in lim.stored_)
    net = PiNet(3, 1, 4096, depth=depth, rank=4).fit(x, y, lr=lr, steps=1)
    assert (net.predict(x) - expect[:4]).norm() < 0.2 * expect[:4].norm()


def test_pinet_converges_to_pilimit():
    """Relative error of the outputs after 10 SGD steps (lr 0.5, 4 inputs, depth 2, r = 4),
    averaged over 4 draws of the projections: about 1/sqrt(width) (measured here
    0.076 / 0.032 / 0.017 at widths 256 / 1024 / 4096; the earlier Omega^T / n projection
    gave 0.118 / 0.066 / 0.032 over 6 draws, the exact one 0.074 / 0.035 / 0.019)."""
    torch.set_num_threads(1)
    x, y = _data(4)
    f_lim = PiLimit(3, 1, depth=2, rank=4).fit(x, y, lr=0.5, steps=10).predict(x)
    errs = []
    for n in (256, 1024, 4096):
        e = [(PiNet(3, 1, n, depth=2, rank=4, width_seed=1000 * n + s).fit(x, y, lr=0.5, steps=10)
              .predict(x) - f_lim).norm() / f_lim.norm() for s in range(4)]
        errs.append(float(sum(e) / len(e)))
    print("relative errors", errs)
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.04 and errs[0] / errs[2] > 2.0


@pytest.mark.parametrize("model", ["limit", "net"])
def test_divergent_lr_raises_and_leaves_unfitted(model):
    x, y = _data(4)
    m = PiLimit(3, 1, depth=2, rank=4) if model == "limit" else PiNet(3, 1, 64, depth=2, rank=4)
    with pytest.raises(DivergenceError, match="diverged at lr=100") as err:
        m.fit(x, y, lr=100.0, steps=20)
    assert err.value.lr == 100.0 and 1 <= err.value.step <= 20
    with pytest.raises(RuntimeError, match="not fitted"):
        m.predict(x)
    m.fit(x, y, lr=0.5, steps=3)                       # a stable lr still works afterwards
    assert torch.isfinite(m.predict(x)).all() and m.loss_curve_[-1] < m.loss_curve_[0]


def test_bad_arguments():
    x, y = _data(4)
    lim = PiLimit(3, 1, depth=2, rank=4)
    with pytest.raises(ValueError, match="y"):
        lim.fit(x, torch.randn(4, 2, dtype=torch.float64), lr=0.1, steps=1)
    for lr in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="lr"):
            lim.fit(x, y, lr=lr, steps=1)
    with pytest.raises(ValueError, match="width"):
        PiNet(3, 1, 2, rank=4)
    with pytest.raises(ValueError, match="depth"):
        PiLimit(3, 1, depth=0)
    with pytest.raises(ValueError, match="`seed`"):
        PiLimit(3, 1, seed="a")
    with pytest.raises(ValueError, match="`width_seed`"):
        PiNet(3, 1, 16, rank=4, width_seed=-1)
    with pytest.raises(TypeError, match="`phi`"):
        PiNet(3, 1, 16, rank=4, phi=lambda t: 1.0)
    with pytest.raises(TypeError, match="`phi`"):
        PiLimit(3, 1, phi=3)
    with pytest.raises(ValueError, match="`input_var`"):
        PiLimit(3, 1, input_var=-1.0)
    with pytest.raises(ValueError, match="`steps`"):
        lim.fit(x, y, lr=0.1, steps=-1)
    with pytest.raises(ValueError, match="`batch_size`"):
        lim.fit(x, y, lr=0.1, steps=1, batch_size=9)



def _omegas(n, r, width_seed):
    """PiNet's projections and their left inverses, drawn exactly as PiNet draws them."""
    gen = torch.Generator().manual_seed(width_seed)
    om = [torch.randn(n, r, generator=gen, dtype=torch.float64) for _ in range(2)]
    return om, [torch.linalg.solve(o.T @ o, o.T) for o in om]


def _pinet_stored_form(omegas, pinvs, a0, b, x, y, lr, steps, phi=torch.relu):
    """The depth-2 PiNet re-implemented in memory O(n r steps): W = Omega^2 B Omega^{1+} +
    sum_s Omega^2 q_s phi(h^1_s)^T / n, V = sum_s a_s phi(h^2_s)^T (pilimit docstring)."""
    (o1, o2), (p1, p2), n = omegas, pinvs, omegas[0].shape[0]
    dphi = {torch.relu: lambda h: (h > 0).double(),
            torch.tanh: lambda h: 1 - torch.tanh(h) ** 2}[phi]
    a_mat, q, f1s, av, f2s = a0.clone(), [], [], [], []

    def fwd(xx):
        h1 = xx @ a_mat.T @ o1.T
        c2 = phi(h1) @ p1.T @ b.T
        if q:
            c2 = c2 + phi(h1) @ torch.cat(f1s).T / n @ torch.cat(q)
        h2 = c2 @ o2.T
        f = (phi(h2) @ torch.cat(f2s).T / n @ torch.cat(av) if av
             else torch.zeros(len(xx), 1, dtype=torch.float64))
        return h1, h2, f

    for _ in range(steps):
        h1, h2, f = fwd(x)
        g = (f - y) / y.numel()
        d2 = dphi(h2) * (g @ torch.cat(av).T @ torch.cat(f2s)) if av else torch.zeros_like(h2)
        s2 = d2 @ o2                                                  # Omega^{2T} delta^2
        back = s2 @ b @ p1 + (s2 @ torch.cat(q).T @ torch.cat(f1s) / n if q else 0)
        d1 = dphi(h1) * back
        q, f1s = q + [-lr * d2 @ p2.T], f1s + [phi(h1)]
        av, f2s = av + [-lr * g], f2s + [phi(h2)]
        a_mat = a_mat - lr * (d1 @ p1.T).T @ x
    return fwd(x)[-1]


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_pinet_stored_form_converges_at_rate_one_over_sqrt_width(name):
    """The stored-vector form equals PiNet's explicit (n, n) weights to rounding, and its
    distance to the limit after 10 steps falls like width^{-1/2} up to width 65536
    (ReLU closed forms and tanh by quadrature; measured, 8 draws, at 256 / 4096 / 65536:
    relu 0.069 / 0.0174 / 0.0039, slope -0.52; tanh 0.072 / 0.0195 / 0.0048, slope -0.49;
    sweeps with other draws: relu slope -0.52 over 256 ... 262144, tanh -0.56)."""
    torch.set_num_threads(1)
    phi, arg = (torch.relu, "relu") if name == "relu" else (torch.tanh, torch.tanh)
    x, y = _data(4)
    a0, (b,) = pi_initial_matrices(3, 4, 2)
    net = PiNet(3, 1, 256, depth=2, rank=4, phi=arg, width_seed=77).fit(x, y, lr=0.5, steps=10)
    f_sim = _pinet_stored_form(*_omegas(256, 4, 77), a0, b, x, y, 0.5, 10, phi)
    assert torch.allclose(f_sim, net.predict(x), atol=1e-13)
    f_lim = PiLimit(3, 1, depth=2, rank=4, phi=arg).fit(x, y, lr=0.5, steps=10).predict(x)
    widths, errs = (256, 4096, 65536), []
    for n in widths:
        e = [(_pinet_stored_form(*_omegas(n, 4, 10**6 * n + s), a0, b, x, y, 0.5, 10, phi)
              - f_lim).norm() / f_lim.norm() for s in range(8)]
        errs.append(float(sum(e) / len(e)))
    slope = math.log(errs[2] / errs[0]) / math.log(widths[2] / widths[0])
    print("relative errors", errs, "slope", slope)
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.01
    assert -0.75 < slope < -0.35


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_factored_pinet_equals_explicit_weights(depth, exact):
    """U = Omega^1 A, W^l = Omega^l R^l stored by their factors is the same network as the
    explicit (n, n) matrices (PiNet docstring), to rounding."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, generator=gen, dtype=torch.float64), torch.randn(6, 2, generator=gen, dtype=torch.float64)
    kw = dict(depth=depth, rank=4, exact_projection=exact)
    a = PiNet(3, 2, 200, **kw).fit(x, y, lr=0.5, steps=8)
    b = PiNet(3, 2, 200, factored=False, **kw).fit(x, y, lr=0.5, steps=8)
    assert a.U.shape == (4, 3) and b.U.shape == (200, 3)
    assert torch.allclose(a.predict(x), b.predict(x), atol=1e-12)
    assert torch.allclose(a.loss_curve_, b.loss_curve_, atol=1e-12)
