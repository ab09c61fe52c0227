"""Convolution kernels (CNN-GP and CNTK) in both spatial layouts.

For a convolution with filter size ``F`` (|F| positions), stride ``s`` and weights
W ~ N(0, W_std^2 / (C |F|)) in the limit of infinitely many channels
(Novak et al. 2019, "Bayesian Deep Convolutional Networks with Many Channels are
Gaussian Processes"; Garriga-Alonso et al. 2019):

    nngp'[x, x'] = W_std^2 / |F| * sum_{d in F} nngp[s x + d, s x' + d] + b_std^2

i.e. a sum over *simultaneous* shifts of both positions, and for the NTK
(Arora et al. 2019, "On Exact Computation with an Infinitely Wide Neural Net"):

    ntk' = nngp' + W_std^2 / |F| * sum_d ntk[s x + d, s x' + d]           (NTK param.)

The uniform weight 1/|F| factorises over spatial dimensions, so each dimension is
handled by one pass over its (S_i, S_i') axis pair: a sum of ``f_i`` strided
diagonal slices of the zero- or circularly-padded tensor.  No Python loop over
positions or pairs; work is ``sum_i f_i`` adds per output entry.  In the
diagonal-spatial layout the same pass acts on the single axis S_i (a box filter).
Padding follows ``jax.lax`` / neural-tangents: SAME pads ``max((ceil(n/s)-1) s + f - n, 0)``
with the smaller half first; CIRCULAR wraps with SAME's pads and then acts as VALID.

The affine part (``W_std^2 . + b_std^2`` and the NTK recursion) is
:func:`widelimit.kernels.rules.affine.affine`, shared with Dense.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from widelimit.kernels.rules.affine import affine
from widelimit.kernels.state import Kernel

PADDINGS = ("SAME", "VALID", "CIRCULAR")

__all__ = ["PADDINGS", "conv_pads", "conv_out_size", "pad_axis", "box_sum", "diag_box_sum",
           "spatial_map", "conv_rule", "conv_local_rule", "check_padding"]


def check_padding(padding: str) -> str:
    p = str(padding).upper()
    if p not in PADDINGS:
        raise ValueError(f"`padding` must be one of {PADDINGS}, got {padding!r}.")
    return p


def conv_pads(n: int, f: int, s: int, padding: str) -> tuple[int, int]:
    """(low, high) padding of one spatial axis of size ``n``, as ``lax.padtype_to_pads``."""
    if padding == "VALID":
        return 0, 0
    out = -(-n // s)
    total = max((out - 1) * s + f - n, 0)
    return total // 2, total - total // 2


def conv_out_size(n: int, f: int, s: int, padding: str, name: str = "filter_shape") -> int:
    lo, hi = conv_pads(n, f, s, padding)
    if n + lo + hi < f:
        raise ValueError(f"`{name}` {f} is larger than the input's spatial size {n} with "
                         f"padding='VALID'; use padding='SAME' or a smaller window.")
    return (n + lo + hi - f) // s + 1


def pad_axis(x: Tensor, axis: int, lo: int, hi: int, circular: bool) -> Tensor:
    """Pad ``x`` along ``axis`` with zeros or periodically (any pad size)."""
    if lo == 0 and hi == 0:
        return x
    n = x.shape[axis]
    if circular:
        idx = torch.arange(-lo, n + hi, device=x.device) % n
        return x.index_select(axis, idx)
    shape = list(x.shape)
    parts = []
    if lo:
        shape[axis] = lo
        parts.append(x.new_zeros(shape))
    parts.append(x)
    if hi:
        shape[axis] = hi
        parts.append(x.new_zeros(shape))
    return torch.cat(parts, axis)


def _shifted_sum(x: Tensor, axes: tuple, f: int, s: int, padding: str) -> Tensor:
    """``out[a, a', ..] = sum_{d<f} x_padded[s a + d, s a' + d, ..]`` on every axis in ``axes``
    (one axis: a strided box filter; an interleaved pair: a diagonal one).

    Zero padding is never materialised: each shift adds the in-range rectangle of ``x``
    to the matching rectangle of the output, in place.  CIRCULAR pads by indexing first.
    """
    n = x.shape[axes[0]]
    lo, hi = conv_pads(n, f, s, padding)
    out_n = conv_out_size(n, f, s, padding)
    if padding == "CIRCULAR":
        for ax in axes:
            x = pad_axis(x, ax, lo, hi, True)
        n, lo = x.shape[axes[0]], 0
    spans = []
    for d in range(f):
        a0 = max(0, -((d - lo) // s))                  # ceil((lo - d) / s)
        a1 = min(out_n - 1, (n - 1 + lo - d) // s)
        if a1 >= a0:
            spans.append((a1 - a0 == out_n - 1, a0, a1, s * a0 + d - lo))
    spans.sort(key=lambda t: not t[0])                  # a full-range shift first
    shape = list(x.shape)
    for ax in axes:
        shape[ax] = out_n
    out = None
    for full, a0, a1, src0 in spans:
        dst = [slice(None)] * x.ndim
        src = [slice(None)] * x.ndim
        for ax in axes:
            dst[ax] = slice(a0, a1 + 1)
            src[ax] = slice(src0, src0 + (a1 - a0) * s + 1, s)
        piece = x[tuple(src)]
        if out is None:
            if full:
                out = piece.clone(memory_format=torch.contiguous_format)
                continue
            out = x.new_zeros(shape)
        out[tuple(dst)] += piece
    return x.new_zeros(shape) if out is None else out


def box_sum(x: Tensor, axis: int, f: int, s: int, padding: str) -> Tensor:
    """``out[a] = sum_{d<f} x_padded[s a + d]`` along ``axis`` (a strided box filter)."""
    return _shifted_sum(x, (axis,), f, s, padding)


def diag_box_sum(x: Tensor, axis: int, f: int, s: int, padding: str) -> Tensor:
    """``out[a, a'] = sum_{d<f} x_padded[s a + d, s a' + d]`` over the axis pair (axis, axis+1)."""
    return _shifted_sum(x, (axis, axis + 1), f, s, padding)


def spatial_map(mat: Optional[Tensor], batch_ndim: int, diagonal: bool, fn_diag, fn_full
                ) -> Optional[Tensor]:
    """Apply a per-dimension operation to every spatial axis (or axis pair) of ``mat``.

    ``fn_diag(x, axis, i)`` acts on a diagonal-layout axis, ``fn_full(x, axis, i)`` on the
    interleaved pair (axis, axis+1); ``i`` is the spatial dimension.  0-d tensors (the
    zero NTK of the inputs) and None pass through.
    """
    if mat is None or mat.ndim == 0:
        return mat
    if diagonal:
        n_sp = mat.ndim - batch_ndim
        for i in range(n_sp):
            mat = fn_diag(mat, batch_ndim + i, i)
        return mat
    n_sp = (mat.ndim - batch_ndim) // 2
    for i in range(n_sp):
        mat = fn_full(mat, batch_ndim + 2 * i, i)
    return mat


def _conv_sums(k: Kernel, mat: Optional[Tensor], batch_ndim: int, filter_shape, strides,
               padding: str) -> Optional[Tensor]:
    """sum_{d in F} mat[s x + d, s x' + d] (the 1/|F| is folded into the affine step)."""
    return spatial_map(mat, batch_ndim, k.diagonal_spatial,
                       lambda x, a, i: box_sum(x, a, filter_shape[i], strides[i], padding),
                       lambda x, a, i: diag_box_sum(x, a, filter_shape[i], strides[i], padding))


def _out_shape(shape: tuple, channels: int, filter_shape, strides, padding: str,
               out_size=conv_out_size) -> tuple:
    sp = tuple(out_size(n, f, s, padding) for n, f, s in zip(shape[2:], filter_shape, strides))
    return (shape[0], channels) + sp


def conv_rule(k: Kernel, filter_shape: Sequence[int], strides: Sequence[int], padding: str,
              W_std, b_std, parameterization: str, s0: float, out_channels: int,
              sums=None, out_size=conv_out_size) -> Kernel:
    """Kernel after a convolution with infinitely many channels (see module docstring).

    ``sums(mat, batch_ndim)`` replaces the weight-sharing spatial sum over the filter
    (used by :func:`conv_local_rule` and the transposed convolution, whose output size per
    axis is ``out_size(n, f, s, padding)``); the 1/|F| normalisation is folded into the
    scalars of the affine step, saving a pass over each tensor.
    """
    if sums is None:
        def sums(mat, batch_ndim):
            return _conv_sums(k, mat, batch_ndim, filter_shape, strides, padding)
    size = math.prod(filter_shape)
    fan_in = k.shape1[1] * size
    w_eff = W_std / math.sqrt(size)             # W_std^2 / |F| on the sums
    nngp_s = sums(k.nngp, 2)
    nngp = affine(nngp_s, w_eff, b_std)
    ntk = k.ntk
    if ntk is not None:
        ntk_s = sums(ntk, 2)
        w2 = w_eff * w_eff
        if parameterization == "ntk":
            if isinstance(w2, float) and ntk_s.ndim:
                ntk = torch.add(nngp, ntk_s, alpha=w2)
            else:
                ntk = nngp + w2 * ntk_s
        else:
            ntk = (fan_in / s0 / size) * nngp_s + w2 * ntk_s
            if b_std is not None:
                ntk = ntk + 1.0
    cov1 = affine(sums(k.cov1, 1), w_eff, b_std)
    cov2 = affine(sums(k.cov2, 1), w_eff, b_std)
    return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, is_gaussian=True, is_input=False,
                     shape1=_out_shape(k.shape1, out_channels, filter_shape, strides, padding, out_size),
                     shape2=_out_shape(k.shape2, out_channels, filter_shape, strides, padding, out_size))


def _diag_of_pairs(mat: Tensor, batch_ndim: int) -> Tensor:
    """(B.., S1, S1', ..., Sk, Sk') -> (B.., S1, ..., Sk)."""
    n_sp = (mat.ndim - batch_ndim) // 2
    for _ in range(n_sp):
        mat = torch.diagonal(mat, dim1=batch_ndim, dim2=batch_ndim + 1)
    return mat


def _embed_diag(d: Tensor, batch_ndim: int) -> Tensor:
    """(B.., S1, ..., Sk) -> (B.., S1, S1', ..., Sk, Sk'), zero off the diagonal."""
    sp = d.shape[batch_ndim:]
    out = d.new_zeros(d.shape[:batch_ndim] + tuple(n for n in sp for _ in range(2)))
    target = out
    for _ in sp:
        target = torch.diagonal(target, dim1=batch_ndim, dim2=batch_ndim + 1)
    target.copy_(d)
    return out


def conv_local_rule(k: Kernel, filter_shape, strides, padding: str, W_std, b_std,
                    parameterization: str, s0: float, out_channels: int) -> Kernel:
    """Locally connected layer (unshared weights, Novak et al. 2019 "LCN"): outputs at
    different positions are independent, so only the diagonal survives:
    nngp'[x, x'] = delta_{x x'} (W_std^2 / |F| sum_d nngp[s x + d, s x + d] + b_std^2)."""
    kd = k.replace(diagonal_spatial=True)

    def sums(mat, batch_ndim):
        if mat is None or mat.ndim == 0 or k.diagonal_spatial:
            return _conv_sums(kd, mat, batch_ndim, filter_shape, strides, padding)
        return _conv_sums(kd, _diag_of_pairs(mat, batch_ndim), batch_ndim, filter_shape,
                          strides, padding)

    out = conv_rule(kd, filter_shape, strides, padding, W_std, b_std, parameterization, s0,
                    out_channels, sums=sums)
    if k.diagonal_spatial:
        return out
    return out.replace(
        nngp=_embed_diag(out.nngp, 2),
        ntk=out.ntk if out.ntk is None or out.ntk.ndim == 0 else _embed_diag(out.ntk, 2),
        cov1=_embed_diag(out.cov1, 1),
        cov2=None if out.cov2 is None else _embed_diag(out.cov2, 1), diagonal_spatial=False)
