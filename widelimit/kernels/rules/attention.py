"""Infinite-width self-attention (Hron et al. 2020, "Infinite attention: NNGP and NTK for
deep attention networks"), with neural-tangents' semantics.

Attention with linear (1/d) query-key scaling: as the key width grows the attention
weights of input x become deterministic, G(x) = phi(QK_std K(x, x)) over the
positions (phi = softmax over the attended position, identity, relu or abs), and the
output is a Gaussian process with

    nngp'[x1, x2] = OV_std^2 G(x1) nngp[x1, x2] G(x2)^T + b_std^2
    ntk'[x1, x2]  = OV_std^2 G(x1) ntk[x1, x2] G(x2)^T + b_std^2 + 2 (nngp' - b_std^2)

where positional embeddings (covariance R over positions, identity or
``decay_fn(|p - p'|_p^p)``) are interpolated into K (SUM: K + W_pe^2 R; CONCAT:
weighted by channel counts).  Positions are flattened to P = prod(S), so a block is
two batched matrix products.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from widelimit.kernels.rules.affine import affine
from widelimit.kernels.state import Kernel

__all__ = ["to_flat", "from_flat", "positional_covariance", "attention_weights",
           "attention_rule", "MECHANISMS"]

MECHANISMS: dict = {
    "SOFTMAX": lambda g: torch.softmax(g, -1),
    "IDENTITY": lambda g: g,
    "RELU": torch.relu,
    "ABS": torch.abs,
}


def to_flat(mat: Tensor, batch_ndim: int) -> Tensor:
    """(B.., S1, S1', ..., Sk, Sk') -> (B.., P, P') with P = prod(S)."""
    n_sp = (mat.ndim - batch_ndim) // 2
    perm = list(range(batch_ndim)) + [batch_ndim + 2 * i for i in range(n_sp)] + \
        [batch_ndim + 2 * i + 1 for i in range(n_sp)]
    p = 1
    for i in range(n_sp):
        p *= mat.shape[batch_ndim + 2 * i]
    return mat.permute(perm).reshape(mat.shape[:batch_ndim] + (p, p))


def from_flat(mat: Tensor, batch_ndim: int, spatial: tuple) -> Tensor:
    """Inverse of :func:`to_flat`."""
    n_sp = len(spatial)
    out = mat.reshape(mat.shape[:batch_ndim] + tuple(spatial) * 2)
    perm = list(range(batch_ndim))
    for i in range(n_sp):
        perm += [batch_ndim + i, batch_ndim + n_sp + i]
    return out.permute(perm)


def positional_covariance(spatial: tuple, p_norm: float, decay_fn: Optional[Callable],
                          like: Tensor) -> Tensor:
    """(P, P) covariance of the positional embeddings: identity, or decay_fn of the
    unnormalised L-p distance to the power p between positions."""
    p = 1
    for n in spatial:
        p *= n
    if decay_fn is None:
        return torch.eye(p, dtype=like.dtype, device=like.device)
    grids = torch.meshgrid(*[torch.arange(n, dtype=like.dtype, device=like.device) for n in spatial],
                           indexing="ij")
    coords = torch.stack([g.reshape(-1) for g in grids], -1)           # (P, ndim)
    dist = (coords[:, None, :] - coords[None, :, :]).abs().pow(p_norm).sum(-1)
    out = decay_fn(dist)
    return out if isinstance(out, Tensor) else torch.as_tensor(out, dtype=like.dtype)


def attention_weights(cov: Tensor, qk_var: float, mechanism: str) -> Tensor:
    """G = phi(QK_std^2 K(x, x)) for flattened per-example covariances (N, P, P)."""
    return MECHANISMS[mechanism](qk_var * cov)


def _weigh(g1: Tensor, mat: Tensor, g2: Tensor, batch_pairs: bool) -> Tensor:
    if batch_pairs:
        return torch.einsum("apq,abqr,bsr->abps", g1, mat, g2)
    return torch.einsum("apq,aqr,asr->aps", g1, mat, g2)


def attention_rule(k: Kernel, *, qk_var: float, ov_std, b_std, mechanism: str, pos_emb: str,
                   p_norm: float, decay_fn: Optional[Callable], n_chan_pos_emb: Optional[int],
                   W_pos_emb_std: float, val_pos_emb: bool, n_chan_out: int) -> Kernel:
    """Kernel after ``GlobalSelfAttention`` with linear scaling (see module docstring)."""
    if not k.n_spatial:
        raise ValueError(f"GlobalSelfAttention needs inputs with spatial (token) axes "
                         f"(N, C, *S); got shape {k.shape1}.")
    if k.diagonal_spatial:
        raise ValueError("GlobalSelfAttention needs the full spatial covariance.")
    spatial = tuple(k.shape1[2:])
    cov1, cov2 = to_flat(k.cov1, 1), None if k.cov2 is None else to_flat(k.cov2, 1)
    nngp = to_flat(k.nngp, 2)
    ntk = k.ntk if k.ntk is None or k.ntk.ndim == 0 else to_flat(k.ntk, 2)
    if pos_emb != "NONE":
        r = positional_covariance(spatial, p_norm, decay_fn, nngp)
        kw, pw = 1.0, W_pos_emb_std ** 2
        if pos_emb == "CONCAT":
            c = k.shape1[1]
            cp = c if n_chan_pos_emb is None else n_chan_pos_emb
            kw, pw = c / (c + cp), pw * cp / (c + cp)
        cov1_i = kw * cov1 + pw * r
        cov2_i = None if cov2 is None else kw * cov2 + pw * r
        if val_pos_emb:
            nngp = kw * nngp + pw * r
            ntk = None if ntk is None else kw * ntk + pw * r
            cov1, cov2 = cov1_i, cov2_i
    else:
        cov1_i, cov2_i = cov1, cov2
    g1 = attention_weights(cov1_i, qk_var, mechanism)
    g2 = g1 if cov2_i is None else attention_weights(cov2_i, qk_var, mechanism)
    # OV_std^2 goes on the small (N, P, P) weights of x1, not on the (N1, N2, P, P) result
    ov1 = g1 * (ov_std * ov_std)
    b2 = 0.0 if b_std is None else b_std * b_std
    new_nngp = affine(_weigh(ov1, nngp, g2, True), 1.0, b_std)
    new_ntk = None
    if ntk is not None:
        # OV^2 G ntk G^T + b^2 + 2 (nngp' - b^2) = OV^2 G ntk G^T + 2 nngp' - b^2
        new_ntk = new_nngp * 2 if b_std is None else torch.sub(new_nngp * 2, b2)
        if ntk.ndim:   # a 0-d ntk is the zero of the raw input
            new_ntk = new_ntk.add_(_weigh(ov1, ntk, g2, True))
    new_cov1 = affine(_weigh(ov1, cov1, g1, False), 1.0, b_std)
    new_cov2 = None if cov2 is None else affine(_weigh(g2 * (ov_std * ov_std), cov2, g2, False),
                                                1.0, b_std)
    shape1 = (k.shape1[0], n_chan_out) + spatial
    shape2 = (k.shape2[0], n_chan_out) + spatial
    return k.replace(nngp=from_flat(new_nngp, 2, spatial),
                     ntk=None if new_ntk is None else from_flat(new_ntk, 2, spatial),
                     cov1=from_flat(new_cov1, 1, spatial),
                     cov2=None if new_cov2 is None else from_flat(new_cov2, 1, spatial),
                     is_gaussian=True, is_input=False, shape1=shape1, shape2=shape2)
