"""The two torch.func NTK recipes: Jacobian contraction and NTK-vector products.

Both follow Novak, Sohl-Dickstein & Schoenholz, "Fast Finite Width Neural Tangent
Kernel" (ICML 2022), sections 3.1-3.2:

* Jacobian contraction: ``J_i = d f(x_i) / d theta`` for every example (per-example
  reverse mode, ``vmap(jacrev)``), then ``Theta_ij = J_i J_j^T`` (one GEMM per parameter).
* NTK-vector products: ``Theta v = J_1 (J_2^T v)`` for the ``N2 * O`` standard basis
  cotangents ``v`` (``vjp`` then ``jvp``), never storing a Jacobian.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.func import jacrev, jvp, vjp, vmap

from widelimit.empirical._axes import OutAxes
from widelimit.empirical._model import ModelFn

__all__ = ["per_example_jacobians", "contract_jacobians", "JacobianContraction",
           "NtkVectorProducts"]


def per_example_jacobians(mf: ModelFn, x: Tensor, names: list[str], out_ndim: int,
                          chunk_size: int | None = None) -> dict[str, Tensor]:
    """``{name: J}`` with ``J[i, *out, :] = d f(x_i)[out] / d theta_name`` flattened: (n, *out, F)."""
    fixed = {k: v for k, v in mf.theta.items() if k not in names}
    sub = {k: mf.theta[k] for k in names}

    def f(th: dict[str, Tensor], xi: Tensor) -> Tensor:
        return mf.single({**fixed, **th}, xi)

    jac = vmap(jacrev(f), in_dims=(None, 0), chunk_size=chunk_size)(sub, x)
    n = x.shape[0]
    return {k: v.reshape(*v.shape[:1 + out_ndim], -1) if v.ndim > 1 + out_ndim
            else v.reshape(n, *v.shape[1:], 1) for k, v in jac.items()}


def contract_jacobians(j1: dict[str, Tensor], j2: dict[str, Tensor], axes: OutAxes) -> Tensor:
    """``sum_p J1[i, out, p] J2[j, out', p]`` over all parameters, with the axis pattern."""
    total: Tensor | None = None
    for k in j1:
        c = axes.contract(j1[k], j2[k], symmetric=j1 is j2)
        total = c if total is None else total + c
    if total is None:
        raise RuntimeError("no parameters to contract")
    return total


class JacobianContraction:
    """Per-example Jacobians, then their inner products.

    Time ``N·O·[FP]`` for the Jacobians plus ``N1·N2·O²·P`` for the contraction
    (``N1·N2·O·P`` when the output axis is traced); memory ``N·O·P`` for the Jacobians.
    """

    def __init__(self, mf: ModelFn, axes: OutAxes) -> None:
        self.mf, self.axes = mf, axes

    def prepare(self, x: Tensor) -> dict[str, Tensor]:
        return per_example_jacobians(self.mf, x, self.mf.names, len(self.axes.out_shape))

    def pair(self, f1: dict[str, Tensor], f2: dict[str, Tensor]) -> Tensor:
        return contract_jacobians(f1, f2, self.axes)

    def bytes_per_example(self, itemsize: int) -> int:
        return self.axes.out_size * self.mf.param_count() * itemsize


class NtkVectorProducts:
    """``Theta e_(j,b) = J_1 (J_2^T e_(j,b))`` for every basis cotangent of x2's outputs.

    Time ``N1·N2·O·[FP]`` (one jvp over the x1 batch per x2 output); memory of a few
    forward passes of the x1 batch per product in flight (``chunk_size`` of them).
    """

    def __init__(self, mf: ModelFn, axes: OutAxes, rows_in_flight: int = 4096) -> None:
        self.mf, self.axes = mf, axes
        self.rows_in_flight = rows_in_flight

    def prepare(self, x: Tensor) -> Tensor:
        return x

    def pair(self, x1: Tensor, x2: Tensor) -> Tensor:
        mf, axes = self.mf, self.axes
        theta = mf.theta
        out_shape, o = axes.out_shape, axes.out_size
        basis = torch.eye(o, dtype=x1.dtype, device=x1.device).reshape(o, *out_shape)

        def f1(th: dict[str, Tensor]) -> Tensor:
            return mf(th, x1)

        def per_x2(xj: Tensor) -> Tensor:
            _, vjp2 = vjp(lambda th: mf.single(th, xj), theta)

            def ntk_vp(ct: Tensor) -> Tensor:
                (tangent,) = vjp2(ct)
                return jvp(f1, (theta,), (tangent,))[1]

            return vmap(ntk_vp)(basis)  # (O, n1, *out)

        n1, n2 = x1.shape[0], x2.shape[0]
        chunk = max(1, self.rows_in_flight // max(1, o * n1))
        k = vmap(per_x2, chunk_size=chunk)(x2)  # (n2, O, n1, *out)
        nd = len(out_shape)
        k = k.reshape(n2, *out_shape, n1, *out_shape)
        # (n2, *out_b, n1, *out_a) -> (n1, *out_a, n2, *out_b)
        perm = [1 + nd] + list(range(2 + nd, 2 + 2 * nd)) + [0] + list(range(1, 1 + nd))
        return axes.reduce_full(axes.from_blocked(k.permute(perm)))

    def bytes_per_example(self, itemsize: int) -> int:
        return 4 * self.axes.out_size * itemsize
