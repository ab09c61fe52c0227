"""Aggregate: graph neural network aggregation over a fixed pattern (adjacency)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from widelimit.kernels.rules.graph import aggregate_rule
from widelimit.kernels.masking import remask
from widelimit.kernels.state import Kernel
from widelimit.layers.base import Layer
from widelimit.layers.masking import ZeroMaskedInput

__all__ = ["Aggregate", "AggregateModule", "edges_to_pattern"]


def edges_to_pattern(edges, n_nodes: int, weights=None, dtype=torch.float64) -> Tensor:
    """Dense (n_nodes, n_nodes) pattern from an (E, 2) edge list of (source, target) pairs:
    entry [i, j] sums the weights (default 1) of the edges i -> j."""
    e = torch.as_tensor(edges, dtype=torch.long)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"`edges` must have shape (E, 2), got {tuple(e.shape)}.")
    if e.numel() and (int(e.min()) < 0 or int(e.max()) >= n_nodes):
        raise ValueError(f"`edges` refers to nodes outside [0, {n_nodes}).")
    w = torch.ones(e.shape[0], dtype=dtype) if weights is None else torch.as_tensor(weights, dtype=dtype)
    a = torch.zeros(n_nodes, n_nodes, dtype=dtype)
    a.index_put_((e[:, 0], e[:, 1]), w, accumulate=True)
    return a


class AggregateModule(ZeroMaskedInput, nn.Module):
    def __init__(self, pattern: Tensor):
        super().__init__()
        self.register_buffer("pattern", pattern)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[2] != self.pattern.shape[0]:
            raise ValueError(f"Aggregate expects node features (N, C, {self.pattern.shape[0]}), got "
                             f"shape {tuple(x.shape)}.")
        return torch.einsum("ij,nci->ncj", self.pattern.to(x.dtype), x)

    def mask_fn(self, mask: Tensor) -> Tensor:
        return mask


class Aggregate(Layer):
    """y[:, :, j] = sum_i pattern[i, j] x[:, :, i] for node features (N, C, n_nodes): every
    node receives the weighted sum of its predecessors (edge i -> j has weight pattern[i, j]).

    Args:
        pattern: (n_nodes, n_nodes) weighted adjacency (possibly normalised or with
            self-loops), shared by every input graph.
        edges: alternatively an (E, 2) edge list of (source, target) pairs, with ``n_nodes``.

    Kernel: ``A^T nngp A`` on the node-pair axes (Du et al. 2019), as
    ``neural_tangents.stax.Aggregate`` with a dense pattern.
    """

    needs_full_spatial = True

    def __init__(self, pattern=None, *, edges=None, n_nodes: Optional[int] = None):
        if (pattern is None) == (edges is None):
            raise ValueError("Give exactly one of `pattern` (n_nodes, n_nodes) or `edges` (E, 2).")
        if edges is not None:
            if not isinstance(n_nodes, int) or n_nodes < 1:
                raise ValueError(f"`n_nodes` must be a positive integer with `edges`, got {n_nodes!r}.")
            pattern = edges_to_pattern(edges, n_nodes)
        p = torch.as_tensor(pattern)
        if p.ndim != 2 or p.shape[0] != p.shape[1]:
            raise ValueError(f"`pattern` must be a square (n_nodes, n_nodes) matrix, got shape "
                             f"{tuple(p.shape)}.")
        if not p.is_floating_point():
            p = p.to(torch.get_default_dtype())
        if not bool(torch.isfinite(p).all()):
            raise ValueError("`pattern` contains NaN or inf values.")
        self.pattern = p

    def apply_kernel(self, k: Kernel) -> Kernel:
        return aggregate_rule(remask(k), self.pattern.to(k.nngp.device))

    def build(self) -> nn.Module:
        return AggregateModule(self.pattern.clone())

    def __repr__(self) -> str:
        return f"Aggregate(n_nodes={self.pattern.shape[0]})"
