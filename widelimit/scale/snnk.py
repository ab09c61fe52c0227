"""Scalable Neural Network Kernel (SNNK) random features (Sehanobish, Choromanski et al., ICLR 2024).

SNNK writes a neuron ``f(w^T x)`` as a kernel ``K(x, w) = E[phi(x)^T psi(w)]`` of the input
and the weights with random feature maps ``phi`` (input side) and ``psi`` (weight side).  For
the ReLU family the paper's ReLU-SNNK uses the same map on both sides,
``phi(x) = f(G^T x) / sqrt(M)``, with Gaussian -- optionally orthogonal -- projections ``G``
(orthogonal random features, ORF, as in Performers):
``K(x, w) = E_g[f(g^T x) f(g^T w)]``, which is exactly the NNGP map of a Dense + ``f`` layer
evaluated between two inputs.  Composing the input-side maps layer by layer therefore gives
features of the network's NNGP (``phi(x1)^T phi(x2) ~ E_g f(g^T x1) f(g^T x2)``); the NTK's
derivative kernels are sketched as for the arc-cosine features (:mod:`.features`).

What ``method="snnk"`` changes against ``method="arccos"`` is the projection: here every block
of ``D`` columns of ``G`` (``D`` = the incoming feature dimension) is orthogonal, each column
rescaled by an independent chi(D) length so that every column is still exactly ``N(0, I_D)``
(each feature stays unbiased) while columns of a block are no longer independent -- the ORF
variance reduction.  The NTK's ``q`` projections are drawn the same way.

Why not the "universal random features" (URF) linearisation ``f(w^T x) = E[phi(x)^T psi(w)]``:
it needs the Fourier transform ``tau`` of ``f`` and linearises ``exp(2 pi i xi w^T x)`` with
complex positive random features, whose second moment is ``exp(c xi |x + w|^2)`` (c > 0); with
ReLU's ``tau(xi) ~ 1 / xi^2`` the variance ``int tau^2 / p * exp(c xi |x + w|^2) d xi`` is
infinite for every sampling density ``p`` (Cauchy-Schwarz), and positive random features for
``exp(w^T x)`` have variance ``exp(|w|^2) ~ exp(D)`` for Gaussian weights in ``D`` dimensions.
Averaging an exact linearisation over Gaussian weights (``C = E_w psi psi^T``) is thus not
usable for the ReLU NNGP; see docs/features.md.
"""
from __future__ import annotations

import torch

__all__ = ["orthogonal_gaussian"]


def orthogonal_gaussian(dim: int, m: int, gen: torch.Generator) -> torch.Tensor:
    """A (dim, m) float64 matrix whose columns are each exactly ``N(0, I_dim)``, with every
    block of ``dim`` consecutive columns mutually orthogonal (orthogonal random features)."""
    if dim == 0 or m == 0:
        return torch.zeros(dim, m, dtype=torch.float64)
    blocks = []
    for start in range(0, m, dim):
        width = min(dim, m - start)
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))  # Haar
        lengths = torch.linalg.norm(torch.randn(dim, width, generator=gen, dtype=torch.float64), dim=0)
        blocks.append(q[:, :width] * lengths)
    return torch.cat(blocks, dim=1)
