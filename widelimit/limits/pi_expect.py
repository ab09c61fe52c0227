r"""Gaussian expectations of the pi-limit (:mod:`widelimit.limits.pilimit`).

With ``g ~ N(0, I_r)`` and r-dimensional representations ``a, b`` (rows of ``(N, r)`` /
``(M, r)`` tensors), the limit needs

.. math::
    K(a, b) = E[\phi(\langle g,a\rangle)\phi(\langle g,b\rangle)], \quad
    k(a) = E[g\,\phi(\langle g,a\rangle)], \quad
    J(a, b) = E[g\,\phi'(\langle g,a\rangle)\phi(\langle g,b\rangle)], \quad
    M(a) = E[\phi'(\langle g,a\rangle)\, g g^\top].

**ReLU, closed forms** (theta the angle between a and b; Cho & Saul 2009 for K, Stein's
lemma ``E[g F(g)] = E[grad F]`` for the rest):

.. math::
    K = \frac{|a||b|}{2\pi}(\sin\theta + (\pi-\theta)\cos\theta),\quad
    k = \frac{a}{2},\quad
    J = \frac{|b|\sin\theta}{2\pi |a|}\, a + \frac{\pi-\theta}{2\pi}\, b,\quad
    M = \frac{I}{2}.

(For J: ``grad[1(g.a>0) relu(g.b)] = delta(g.a) relu(g.b) a + 1(g.a>0) 1(g.b>0) b``; the
first term's mean is ``|b| sin(theta) / (2 pi |a|)``, the second's ``(pi - theta)/(2 pi)``.)

**Any other phi, quadrature.** Every expectation lives in the plane of ``a`` and ``b``:
with an orthonormal basis ``e1 = a/|a|``, ``e2`` of that plane, ``<g,a> = |a| u`` and
``<g,b> = b1 u + b2 w`` with ``u, w`` iid N(0, 1); Gauss–Hermite tensor quadrature in
``(u, w)`` (exact for polynomial phi up to its degree), ``phi'`` by autograd.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["PiExpectations", "relu_expectations", "quadrature_expectations"]

_EPS = 1e-30


class PiExpectations:
    """The four expectations ``K, k, J, M`` of one nonlinearity (module docstring)."""

    name: str = "?"

    def kernel(self, a: Tensor, b: Tensor) -> Tensor:
        """``K(a_i, b_s)``: (N, M)."""
        raise NotImplementedError

    def mean_gphi(self, a: Tensor) -> Tensor:
        """``k(a_i)``: (N, r)."""
        raise NotImplementedError

    def jac_contract(self, a: Tensor, b: Tensor, w: Tensor) -> Tensor:
        """``sum_s w_is J(a_i, b_s)``: (N, r), for weights ``w`` (N, M)."""
        raise NotImplementedError

    def mean_dphi_gg(self, a: Tensor, u: Tensor) -> Tensor:
        """``M(a_i) u_i``: (N, r), for vectors ``u`` (N, r)."""
        raise NotImplementedError


def _norms_angle(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1)[None, :]
    cos = ((a @ b.T) / (na * nb).clamp_min(_EPS)).clamp(-1.0, 1.0)
    return na, nb, torch.arccos(cos)


class _Relu(PiExpectations):
    name = "relu"

    def kernel(self, a: Tensor, b: Tensor) -> Tensor:
        na, nb, th = _norms_angle(a, b)
        return na * nb * (torch.sin(th) + (math.pi - th) * torch.cos(th)) / (2 * math.pi)

    def mean_gphi(self, a: Tensor) -> Tensor:
        return a / 2

    def jac_contract(self, a: Tensor, b: Tensor, w: Tensor) -> Tensor:
        na, nb, th = _norms_angle(a, b)
        alpha = nb * torch.sin(th) / (2 * math.pi * na.clamp_min(_EPS))     # (N, M)
        beta = (math.pi - th) / (2 * math.pi)
        return (w * alpha).sum(1, keepdim=True) * a + (w * beta) @ b

    def mean_dphi_gg(self, a: Tensor, u: Tensor) -> Tensor:
        return u / 2


class _Quadrature(PiExpectations):
    def __init__(self, fn: Callable[[Tensor], Tensor], order: int, name: str) -> None:
        x, w = np.polynomial.hermite_e.hermegauss(order)      # weight exp(-x^2/2)
        self.nodes = torch.tensor(x, dtype=torch.float64)
        self.weights = torch.tensor(w / math.sqrt(2 * math.pi), dtype=torch.float64)
        self.fn, self.name = fn, name

    def _phi_dphi(self, z: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            v = self.fn(zz)
            (d,) = torch.autograd.grad(v.sum(), zz)
        return v.detach(), d.detach()

    def _plane(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``|a|`` (N,1), ``e1`` (N,r), ``b1, b2`` (N,M) and ``e2`` (N,M,r)."""
        na = a.norm(dim=1, keepdim=True)
        e1 = a / na.clamp_min(_EPS)
        b1 = e1 @ b.T
        resid = b[None, :, :] - b1[..., None] * e1[:, None, :]
        b2 = resid.norm(dim=2)
        e2 = resid / b2[..., None].clamp_min(_EPS)
        return na, e1, b1, b2, e2

    def kernel(self, a: Tensor, b: Tensor) -> Tensor:
        na, _, b1, b2, _ = self._plane(a, b)
        x, w = self.nodes.to(a), self.weights.to(a)
        fa = self.fn(na[..., None, None] * x[:, None])                      # (N,1,Q,1)
        fb = self.fn(b1[..., None, None] * x[:, None] + b2[..., None, None] * x[None, :])
        return (fa * fb * (w[:, None] * w[None, :])).sum((-1, -2))

    def mean_gphi(self, a: Tensor) -> Tensor:
        na = a.norm(dim=1, keepdim=True)
        x, w = self.nodes.to(a), self.weights.to(a)
        m = (w * x * self.fn(na * x)).sum(1, keepdim=True)                  # E[u phi(|a| u)]
        return m * a / na.clamp_min(_EPS)

    def jac_contract(self, a: Tensor, b: Tensor, wts: Tensor) -> Tensor:
        na, e1, b1, b2, e2 = self._plane(a, b)
        x, w = self.nodes.to(a), self.weights.to(a)
        _, da = self._phi_dphi(na[..., None, None] * x[:, None])            # (N,1,Q,1)
        fb = self.fn(b1[..., None, None] * x[:, None] + b2[..., None, None] * x[None, :])
        ww = w[:, None] * w[None, :]
        ju = (x[:, None] * da * fb * ww).sum((-1, -2))                       # (N, M)
        jw = (x[None, :] * da * fb * ww).sum((-1, -2))
        return (wts * ju).sum(1, keepdim=True) * e1 + torch.einsum("nm,nm,nmr->nr", wts, jw, e2)

    def mean_dphi_gg(self, a: Tensor, u: Tensor) -> Tensor:
        na = a.norm(dim=1, keepdim=True)
        e1 = a / na.clamp_min(_EPS)
        x, w = self.nodes.to(a), self.weights.to(a)
        _, d = self._phi_dphi(na * x)                                        # (N, Q)
        m0, m2 = (w * d).sum(1, keepdim=True), (w * x * x * d).sum(1, keepdim=True)
        proj = (u * e1).sum(1, keepdim=True) * e1
        return m0 * (u - proj) + m2 * proj


def relu_expectations() -> PiExpectations:
    """The ReLU expectations in closed form."""
    return _Relu()


def quadrature_expectations(fn: Callable[[Tensor], Tensor], order: int = 40,
                            name: Optional[str] = None) -> PiExpectations:
    """The expectations of an elementwise torch function ``fn`` by ``order``-point
    Gauss–Hermite quadrature per axis (``fn'`` by autograd)."""
    if not callable(fn):
        raise TypeError(f"`phi` must be 'relu' or a callable torch function, got {fn!r}.")
    if not isinstance(order, int) or isinstance(order, bool) or order < 2:
        raise ValueError(f"`quadrature_order` must be an integer >= 2, got {order!r}.")
    return _Quadrature(fn, order, name or getattr(fn, "__name__", "phi"))
