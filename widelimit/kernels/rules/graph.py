"""Graph aggregation kernels (Du et al. 2019, "Graph Neural Tangent Kernel"; neural-tangents'
``Aggregate``).

Aggregation over the nodes of a graph with pattern A (A[i, j] = weight of the edge
i -> j; each node sums its predecessors, as neural-tangents), y[j] = sum_i A[i, j] x[i],
is linear, so every covariance is transformed as
    nngp'[x1, x2] = A^T nngp[x1, x2] A          (same for ntk, cov1, cov2)
on the (node, node') axis pair.  Input layout (N, C, n_nodes).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from widelimit.kernels.state import Kernel

__all__ = ["aggregate_rule"]


def aggregate_rule(k: Kernel, adjacency: Tensor) -> Kernel:
    """Kernel after y[j] = sum_i A[i, j] x[i] over the nodes (one spatial axis)."""
    if k.n_spatial != 1:
        raise ValueError(f"Aggregate acts on node features (N, C, n_nodes); got shape {k.shape1}.")
    if k.diagonal_spatial:
        raise ValueError("Aggregate needs the full spatial (node-pair) covariance.")
    n = k.shape1[2]
    if tuple(adjacency.shape) != (n, n):
        raise ValueError(f"`pattern` must be ({n}, {n}) for inputs with {n} nodes, got "
                         f"{tuple(adjacency.shape)}.")

    def fn(mat: Optional[Tensor], batch_pairs: bool) -> Optional[Tensor]:
        if mat is None or mat.ndim == 0:
            return mat
        a = adjacency.to(mat.dtype)
        return torch.einsum("ji,...jk,kl->...il", a, mat, a)

    return k.replace(nngp=fn(k.nngp, True), ntk=fn(k.ntk, True), cov1=fn(k.cov1, False),
                     cov2=fn(k.cov2, False))
