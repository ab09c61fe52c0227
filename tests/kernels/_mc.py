"""Monte Carlo estimates of NNGP / NTK over real finite networks (shared by the tests).

Empirical NNGP: mean over independently initialised networks of f(x1) f(x2)^T / out_dim.
Empirical NTK: mean over networks and outputs of J_o(x1) J_o(x2)^T (torch.func.jacrev).
The tolerance is ``k`` standard errors of the mean (estimated from the per-network
spread) plus a finite-width allowance ``bias / width`` relative to the kernel scale.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call, jacrev


def images(n: int, shape: tuple, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """``n`` seeded standard-normal inputs of per-example ``shape``, e.g. (C, H, W)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n,) + tuple(shape), generator=g, dtype=dtype)


def check_mc_nngp(build, shape: tuple, width: int, what: str, n_nets: int = 16) -> None:
    """Analytic NNGP of ``build(width)`` vs Monte Carlo over its finite nets, on 3 x 2
    inputs of ``shape`` of which one pair is identical."""
    x1, x2 = images(3, shape, 1), images(2, shape, 2)
    x2[0] = x1[0]
    exact = build(width).kernel_fn(x1, x2, get="nngp").numpy()
    samples, _ = mc_kernels(build(width), x1, x2, n_nets=n_nets)
    assert_mc_close(samples, exact, width, what=what)


def check_mc_ntk(build, shape: tuple, width: int, what: str, n_nets: int = 8) -> None:
    """Analytic NTK of ``build(width)`` vs Monte Carlo over its finite nets, on 2 x 2 inputs."""
    x1, x2 = images(2, shape, 3), images(2, shape, 4)
    net = build(width)
    exact = net.kernel_fn(x1, x2, get="ntk").numpy()
    _, samples = mc_kernels(net, x1, x2, n_nets=n_nets, ntk=True)
    assert_mc_close(samples, exact, width, what=what)


def _per_net(net, x1, x2, seed, ntk: bool, kw1=None, kw2=None):
    kw1, kw2 = kw1 or {}, kw2 or {}
    m = net.module(tuple(x1.shape[1:]), dtype=x1.dtype, seed=seed)
    with torch.no_grad():
        f1, f2 = m(x1, **kw1), m(x2, **kw2)
    g = (f1 @ f2.T / f1.shape[1]).numpy()
    if not ntk:
        return g, None
    params = {k: v.detach() for k, v in m.named_parameters()}

    def f(p, x, kw):
        return functional_call(m, p, (x,), kw)

    j1 = jacrev(f)(params, x1, kw1)
    j2 = jacrev(f)(params, x2, kw2)
    t = sum(torch.einsum("ao...,bo...->ab", j1[k].flatten(2), j2[k].flatten(2)) for k in params)
    return g, (t / f1.shape[1]).numpy()


def mc_kernels(net, x1, x2, n_nets: int, ntk: bool = False, kw1=None, kw2=None):
    """Per-network empirical kernels; ``kw1`` / ``kw2``: forward keyword arguments for
    x1 / x2 (e.g. ``{"mask_constant": float("nan")}``)."""
    gs, ts = [], []
    for s in range(n_nets):
        g, t = _per_net(net, x1, x2, 1000 + s, ntk, kw1, kw2)
        gs.append(g)
        if t is not None:
            ts.append(t)
    return np.stack(gs), (np.stack(ts) if ntk else None)


def assert_mc_close(samples: np.ndarray, exact: np.ndarray, width: int, k: float = 5.0,
                    bias: float = 3.0, what: str = ""):
    mean = samples.mean(0)
    se = samples.std(0, ddof=1) / np.sqrt(samples.shape[0])
    scale = np.abs(exact).max()
    tol = k * se + bias * scale / width
    err = np.abs(mean - exact)
    assert np.all(err <= tol), (f"{what}: MC mean deviates; max err/tol "
                                f"{(err / tol).max():.2f}\nmean={mean}\nexact={exact}\nse={se}")


def mc_spatial_nngp(net, x1, x2, n_nets: int) -> np.ndarray:
    """Per-network position-resolved NNGP of a network ending in (N, C, *S) pre-activations:
    mean over channels of z1[a, c, p] z2[b, c, q], in the kernel's interleaved layout
    (N1, N2, S1, S1', S2, S2', ...) of ``kernel_fn(..., diagonal_spatial=False).nngp``."""
    out = []
    for s in range(n_nets):
        m = net.module(tuple(x1.shape[1:]), dtype=x1.dtype, seed=1000 + s)
        with torch.no_grad():
            z1, z2 = m(x1), m(x2)
        sp = tuple(z1.shape[2:])
        g = torch.einsum("acp,bcq->abpq", z1.flatten(2), z2.flatten(2)) / z1.shape[1]
        g = g.reshape(g.shape[:2] + sp + sp)
        perm = [0, 1] + [a for i in range(len(sp)) for a in (2 + i, 2 + len(sp) + i)]
        out.append(g.permute(perm).numpy())
    return np.stack(out)


def assert_blocked_equal(net, x):
    """Blocked == unblocked; entries of an input with itself get a looser tolerance, as in
    test_conv.test_blocked_equals_unblocked (last-bit differences amplified where
    sqrt(v1 v2 - c^2) cancels)."""
    ref = net.kernel_fn(x)
    got = net.kernel_fn(x, max_memory="1MB")
    eye = torch.eye(x.shape[0], dtype=torch.bool)
    for name in ("nngp", "ntk"):
        a, b = getattr(got, name), getattr(ref, name)
        torch.testing.assert_close(a[~eye], b[~eye], rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(a[eye], b[eye], rtol=1e-7, atol=0)
