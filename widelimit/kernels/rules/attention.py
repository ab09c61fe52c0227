"""Infinite-width self-attention (Hron et al. 2020, "Infinite attention: NNGP and NTK for
deep attention networks"), with neural-tangents' semantics.

Linear (1/d) query-key scaling, tied queries and keys: as the key width grows the
attention weights of input x become deterministic, G(x) = phi(QK_std K(x, x)) over the
positions (phi = softmax over the attended position, identity, relu or abs), and the
output is a Gaussian process with

    nngp'[x1, x2] = OV_std^2 G(x1) nngp[x1, x2] G(x2)^T + b_std^2
    ntk'[x1, x2]  = OV_std^2 G(x1) ntk[x1, x2] G(x2)^T + b_std^2 + 2 (nngp' - b_std^2)

Standard 1/sqrt(d) scaling, independent queries and keys: the logits
G_pq = QK_std Q_p.K_q / sqrt(d) stay random, jointly Gaussian with
Cov(G_pq(x1), G_p'q'(x2)) = QK_std^2 K[p, p'] K[q, q'].  Their softmax / relu / abs has no
closed-form expectation (neural-tangents raises for them too); for the identity
mechanism, with dot(A, B) = sum_{q, q'} A[q, q'] B[q, q'] (Hron et al. 2020, Sec. 3):

    nngp' = (QK_std OV_std)^2 dot(K12, V12) K12 + b_std^2
    ntk'  = (QK_std OV_std)^2 [(dot(K12, T_V) + dot(T_K, V12)) K12
                               + dot(K12, V12) (T_K + 4 K12)] + b_std^2

(K: covariance of the query/key inputs, V of the value inputs, T_K, T_V their NTKs;
the 4 counts the query, key, value and output weights).

Positional embeddings (covariance R over positions, identity or
``decay_fn(|p - p'|_p^p)``) are interpolated into K (SUM: K + W_pe^2 R; CONCAT:
weighted by channel counts), and into V with ``val_pos_emb``.  Masks
(:mod:`widelimit.kernels.masking`): the covariances and R are zero at masked positions,
and masked keys get no attention weight (softmax over the unmasked keys).  Positions
are flattened to P = prod(S), so a block is two batched matrix products.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from widelimit.kernels.masking import remask
from widelimit.kernels.rules.affine import affine
from widelimit.kernels.state import Kernel

__all__ = ["to_flat", "from_flat", "positional_covariance", "apply_mechanism",
           "attention_weights", "attention_rule", "attention_output", "factor_rows",
           "factors_usable", "MECHANISMS"]

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


def apply_mechanism(logits: Tensor, mechanism: str, masked_keys: Optional[Tensor] = None) -> Tensor:
    """phi(logits) over the last (key) axis, with no weight on keys where ``masked_keys``
    (broadcastable to ``logits``) is True: the softmax runs over the unmasked keys (a
    query whose keys are all masked gets uniform weights, as neural-tangents)."""
    if masked_keys is None:
        return MECHANISMS[mechanism](logits)
    if mechanism == "SOFTMAX":
        return torch.softmax(logits.masked_fill(masked_keys, torch.finfo(logits.dtype).min), -1)
    return MECHANISMS[mechanism](logits).masked_fill(masked_keys, 0.0)


def attention_weights(cov: Tensor, qk_var: float, mechanism: str,
                      mask: Optional[Tensor] = None) -> Tensor:
    """G = phi(QK_std K(x, x)) for flattened per-example covariances (N, P, P), with no
    weight on masked keys (``mask`` (N, P), True = masked)."""
    return apply_mechanism(qk_var * cov, mechanism, None if mask is None else mask[:, None, :])


def _weigh(g1: Tensor, mat: Tensor, g2: Tensor, batch_pairs: bool) -> Tensor:
    if batch_pairs:
        return torch.einsum("apq,abqr,bsr->abps", g1, mat, g2)
    return torch.einsum("apq,aqr,asr->aps", g1, mat, g2)


def _masked_r(r: Tensor, ma: Optional[Tensor], mb: Optional[Tensor], pairs: bool) -> Tensor:
    """R with the rows of masked positions of ``ma`` and columns of ``mb`` zeroed:
    (Na, P, P) per example, (Na, Nb, P, P) for pairs, or R itself without masks."""
    if ma is None and mb is None:
        return r
    keep = torch.ones((), dtype=torch.bool, device=r.device)
    if ma is not None:
        keep = keep & ~(ma[:, None, :, None] if pairs else ma[:, :, None])
    if mb is not None:
        keep = keep & ~(mb[None, :, None, :] if pairs else mb[:, None, :])
    return r * keep


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """sum over the last two (position-pair) axes of a * b, kept as (..., 1, 1)."""
    return (a * b).sum((-2, -1), keepdim=True)


def _sqrt_identity(k: dict, kq: dict, qk_var: float, ov_std, b_std, val_pos_emb: bool,
                   pos_emb: bool) -> dict:
    """Identity attention with 1/sqrt(d) scaling (module docstring); ``k`` holds the
    value-side covariances, ``kq`` the query/key-side ones (same keys)."""
    std = qk_var * ov_std
    v = kq if val_pos_emb else k
    out = {"cov1": affine(_dot(kq["cov1"], v["cov1"]) * kq["cov1"], std, b_std),
           "cov2": None if kq["cov2"] is None else
           affine(_dot(kq["cov2"], v["cov2"]) * kq["cov2"], std, b_std)}
    dot12 = _dot(kq["nngp"], v["nngp"])
    out["nngp"] = affine(dot12 * kq["nngp"], std, b_std)
    out["ntk"] = None
    if k["ntk"] is not None:
        if val_pos_emb or not pos_emb:
            ntk_dot = 2 * _dot(kq["nngp"], kq["ntk"])
        else:
            ntk_dot = _dot(kq["nngp"], k["ntk"]) + _dot(k["nngp"], kq["ntk"])
        out["ntk"] = affine(ntk_dot * kq["nngp"] + dot12 * (kq["ntk"] + 4 * kq["nngp"]), std, b_std)
    return out


def _plus_b2(fresh: Tensor, b_std) -> Tensor:
    """``affine(fresh, 1, b_std)`` in place on a tensor this rule just made (no copy)."""
    return fresh if b_std is None else fresh.add_(b_std * b_std)


def _linear(k: dict, kq: dict, masks: tuple, qk_var: float, ov_std, b_std, mechanism: str,
            val_pos_emb: bool, factors: Optional[tuple] = None) -> dict:
    """Linear scaling: deterministic attention weights G (module docstring).

    ``factors`` ``(f1, f2)`` (N, P, C): the input kernel is f1[a] f2[b]^T (raw inputs), so
    G1[a] K[a, b] G2[b]^T = (G1 f1)[a] (G2 f2)[b]^T: one (N1 P, C) x (C, N2 P) product
    instead of two batched products over all N1 N2 pairs; the per-input covariances are
    (G f)[a] (G f)[a]^T likewise."""
    g1 = attention_weights(kq["cov1"], qk_var, mechanism, masks[0])
    g2 = g1 if kq["cov2"] is None else attention_weights(kq["cov2"], qk_var, mechanism, masks[1])
    v = kq if val_pos_emb else k
    # OV_std^2 goes on the small (N, P, P) weights, not on the (N1, N2, P, P) results
    ov2 = ov_std * ov_std
    o1 = g1 * ov2
    if factors is not None:
        z1, z2 = torch.matmul(o1, factors[0]), torch.matmul(g2, factors[1])
        zg1 = z2 if v["cov2"] is None else torch.matmul(g1, factors[0])
        n1, p, c = z1.shape
        nngp = (z1.reshape(n1 * p, c) @ z2.reshape(-1, c).T).reshape(n1, p, -1, p).transpose(1, 2)
        cov1 = torch.matmul(z1, zg1.transpose(1, 2))
        cov2 = None if v["cov2"] is None else torch.matmul(z2 * ov2, z2.transpose(1, 2))
    else:
        nngp = _weigh(o1, v["nngp"], g2, True)
        cov1 = _weigh(o1, v["cov1"], g1, False)
        cov2 = None if v["cov2"] is None else _weigh(g2 * ov2, v["cov2"], g2, False)
    out = {"nngp": _plus_b2(nngp, b_std), "cov1": _plus_b2(cov1, b_std),
           "cov2": None if cov2 is None else _plus_b2(cov2, b_std), "ntk": None}
    if v["ntk"] is not None:
        # OV^2 G ntk G'^T + b^2 + 2 (nngp' - b^2) = OV^2 G ntk G'^T + 2 nngp' - b^2
        ntk = out["nngp"] * 2 if b_std is None else torch.sub(out["nngp"] * 2, b_std * b_std)
        if v["ntk"].ndim:   # a 0-d ntk is the zero of the raw input
            ntk = ntk.add_(_weigh(o1, v["ntk"], g2, True))
        out["ntk"] = ntk
    return out


def factors_usable(k: Kernel, linear_scaling: bool, pos_emb: str) -> bool:
    """Whether the kernel is that of raw inputs given by their factors (``Kernel.input_factors``),
    so that linear-scaling attention is a product of factors (see :func:`_linear`)."""
    fac = k.input_factors
    return (linear_scaling and fac is not None and fac[0] is k.nngp and pos_emb == "NONE"
            and k.mask1 is None and k.mask2 is None and (k.ntk is None or k.ntk.ndim == 0))


def factor_rows(k: Kernel, qk_var: float, ov_std, mechanism: str) -> Tensor:
    """(N, P, C) rows F with OV_std^2 G K G^T = F F^T for x1 against itself on raw inputs
    (:func:`factors_usable`): the attention output's nngp is F F^T + b_std^2."""
    g = attention_weights(to_flat(k.cov1, 1), qk_var, mechanism)
    return torch.matmul(g, k.input_factors[1]).mul_(ov_std)


def attention_output(k: Kernel, out: dict, n_chan_out: int) -> Kernel:
    """The state after attention from its outputs ``out`` with flattened positions
    (nngp, ntk (N1, N2, P, P), cov1, cov2 (N, P, P); a 0-d or None ntk as it is)."""
    spatial = tuple(k.shape1[2:])
    ntk = out["ntk"]
    return k.replace(nngp=from_flat(out["nngp"], 2, spatial),
                     ntk=ntk if ntk is None or ntk.ndim == 0 else from_flat(ntk, 2, spatial),
                     cov1=from_flat(out["cov1"], 1, spatial),
                     cov2=None if out["cov2"] is None else from_flat(out["cov2"], 1, spatial),
                     is_gaussian=True, is_input=False, shape1=(k.shape1[0], n_chan_out) + spatial,
                     shape2=(k.shape2[0], n_chan_out) + spatial, input_factors=None)


def attention_rule(k: Kernel, *, qk_var: float, ov_std, b_std, mechanism: str, pos_emb: str,
                   p_norm: float, decay_fn: Optional[Callable], n_chan_pos_emb: Optional[int],
                   W_pos_emb_std: float, val_pos_emb: bool, n_chan_out: int,
                   linear_scaling: bool = True) -> Kernel:
    """Kernel after ``GlobalSelfAttention`` (see module docstring)."""
    if not k.n_spatial:
        raise ValueError(f"GlobalSelfAttention needs inputs with spatial (token) axes "
                         f"(N, C, *S); got shape {k.shape1}.")
    if k.diagonal_spatial:
        raise ValueError("GlobalSelfAttention needs the full spatial covariance.")
    if not linear_scaling and mechanism != "IDENTITY":
        raise NotImplementedError(
            f"GlobalSelfAttention(linear_scaling=False) has a closed-form kernel only for "
            f"attention_mechanism='IDENTITY' (as in neural-tangents): with 1/sqrt(d) scaling the "
            f"logits stay Gaussian and E[{mechanism.lower()}(logits)] has no closed form; got "
            f"attention_mechanism={mechanism!r}. Use linear_scaling=True for it.")
    k = remask(k)
    spatial = tuple(k.shape1[2:])
    m1 = None if k.mask1 is None else k.mask1.flatten(1)
    m2 = m1 if k.x1_is_x2 else None if k.mask2 is None else k.mask2.flatten(1)
    fac = k.input_factors
    usable = factors_usable(k, linear_scaling, pos_emb)
    flat = {"nngp": None if usable else to_flat(k.nngp, 2), "cov1": to_flat(k.cov1, 1),
            "cov2": None if k.cov2 is None else to_flat(k.cov2, 1),
            "ntk": k.ntk if k.ntk is None or k.ntk.ndim == 0 else to_flat(k.ntk, 2)}
    kq = flat
    if pos_emb != "NONE":
        if flat["ntk"] is not None and flat["ntk"].ndim == 0:
            flat["ntk"] = torch.zeros_like(flat["nngp"])
        r = positional_covariance(spatial, p_norm, decay_fn, flat["nngp"])
        kw, pw = 1.0, W_pos_emb_std ** 2
        if pos_emb == "CONCAT":
            c = k.shape1[1]
            cp = c if n_chan_pos_emb is None else n_chan_pos_emb
            kw, pw = c / (c + cp), pw * cp / (c + cp)
        r12 = _masked_r(r, m1, m2, True)
        rs = {"nngp": r12, "ntk": r12, "cov1": _masked_r(r, m1, m1, False),
              "cov2": _masked_r(r, m2, m2, False)}
        kq = {n: None if v is None else kw * v + pw * rs[n] for n, v in flat.items()}
    if linear_scaling:
        out = _linear(flat, kq, (m1, m2), qk_var, ov_std, b_std, mechanism, val_pos_emb,
                      fac[1:] if usable else None)
    else:
        if flat["ntk"] is not None and flat["ntk"].ndim == 0:
            flat["ntk"] = kq["ntk"] = torch.zeros_like(flat["nngp"])
        out = _sqrt_identity(flat, kq, qk_var, ov_std, b_std, val_pos_emb, pos_emb != "NONE")
    return attention_output(k, out, n_chan_out)
