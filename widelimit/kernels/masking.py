"""Masking of variable-length inputs (neural-tangents' ``mask_constant``).

A *position mask* is a boolean tensor (N, *S) (``True`` = masked) for inputs
(N, C, *S); for vectors (N, C) it is (N,): a whole example is masked.  It travels
in :class:`~widelimit.kernels.state.Kernel` as ``mask1`` / ``mask2`` and follows
neural-tangents 0.6.5 (Novak et al. 2020, ``stax.requirements.supports_masking``):

* masked entries of the inputs are replaced by zeros, and every layer that mixes
  positions (convolution, pooling, Flatten, attention, Aggregate) sees zeros at
  masked positions (:func:`remask` zeroes the covariances of every pair in which one
  position is masked);
* a convolution or pooling window's output is masked when the position at the
  window's centre is (:func:`window_mask`); global pooling and Flatten mask an
  example when all its positions are;
* ``GlobalAvgPool`` averages over unmasked positions only; attention gives masked keys
  no weight;
* entries of the final kernel that involve a masked output position are zero.

The finite networks of :mod:`widelimit.layers` follow the same rules
(:mod:`widelimit.layers.masking`), so Monte Carlo over them agrees with the kernel.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from widelimit.kernels.rules.conv import conv_out_size, conv_pads
from widelimit.kernels.state import Kernel

__all__ = ["entry_mask", "apply_mask", "pair_masks", "remask", "window_mask", "all_masked",
           "unmasked_counts", "merge_masks", "map_masks"]


def entry_mask(x: Tensor, mask: Any = None, mask_constant: Optional[float] = None,
               name: str = "x1") -> Optional[Tensor]:
    """A boolean mask broadcastable to ``x`` (N, C, *S) from ``mask`` or ``mask_constant``.

    ``mask`` may have the shape of ``x`` (per entry), be broadcastable to it with the same
    number of axes (e.g. (N, 1, *S)), or be a position mask (N, *S) without the channel
    axis.  ``mask_constant`` marks the entries equal to it (NaN marks NaN entries).
    """
    if mask is not None and mask_constant is not None:
        raise ValueError("Give either `mask` or `mask_constant`, not both.")
    if mask_constant is not None:
        if isinstance(mask_constant, bool) or not isinstance(mask_constant, (int, float)):
            raise TypeError(f"`mask_constant` must be a number (e.g. float('nan')), got "
                            f"{type(mask_constant).__name__}.")
        return torch.isnan(x) if math.isnan(mask_constant) else x == mask_constant
    if mask is None:
        return None
    m = torch.as_tensor(mask, device=x.device)
    if m.dtype != torch.bool:
        raise TypeError(f"`mask` for `{name}` must be boolean (True = masked), got dtype {m.dtype}.")
    if m.ndim == x.ndim - 1:
        m = m.unsqueeze(1)
    ok = m.ndim == x.ndim and m.shape[0] == x.shape[0] and all(
        a in (1, b) for a, b in zip(m.shape[1:], x.shape[1:]))
    if not ok:
        sp = tuple(x.shape[2:])
        raise ValueError(f"`mask` for `{name}` must have shape {tuple(x.shape)} (per entry), "
                         f"{(x.shape[0], 1) + sp} or {(x.shape[0],) + sp} (per position) for "
                         f"`{name}` of shape {tuple(x.shape)}; got {tuple(m.shape)}.")
    return m


def apply_mask(x: Tensor, entries: Optional[Tensor], drop_empty: bool = True
               ) -> tuple[Tensor, Optional[Tensor]]:
    """``(x with masked entries set to 0, position mask (N, *S) or None)``.

    A position is masked when all its channels are; entries masked in only some
    channels are just zeroed (as neural-tangents after its first Dense/Conv layer).
    With ``drop_empty`` a mask that masks nothing is returned as None (a data-dependent
    branch: not under ``torch.func.vmap``).
    """
    if entries is None:
        return x, None
    x = torch.where(entries, torch.zeros((), dtype=x.dtype, device=x.device), x)
    pos = entries.expand(x.shape).all(1)
    return x, (None if drop_empty and not bool(pos.any()) else pos)


def _spread(m: Tensor, batch_ndim: int, batch_at: int, slot: int, full: bool) -> Tensor:
    """Reshape a position mask to broadcast against a kernel: its batch axis at
    ``batch_at`` of ``batch_ndim``; spatial axes at pair slot ``slot`` (0: S, 1: S')
    of the interleaved layout when ``full``, else one axis per dimension."""
    shape = [1] * batch_ndim
    shape[batch_at] = m.shape[0]
    for n in m.shape[1:]:
        shape += ([n, 1] if slot == 0 else [1, n]) if full else [n]
    return m.reshape(shape)


def _or(a: Optional[Tensor], b: Optional[Tensor]) -> Optional[Tensor]:
    if a is None:
        return b
    return a if b is None else a | b


def pair_masks(k: Kernel) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Masks ``(m11, m12, m22)`` broadcastable against cov1, nngp and cov2: True where
    at least one position of the pair is masked (None: nothing masked)."""
    m1 = k.mask1
    m2 = k.mask1 if k.x1_is_x2 else k.mask2
    full = k.n_spatial > 0 and not k.diagonal_spatial

    def self_pair(m):
        if m is None:
            return None
        return _spread(m, 1, 0, 0, full) | _spread(m, 1, 0, 1, full) if full else m

    m12 = _or(None if m1 is None else _spread(m1, 2, 0, 0, full),
              None if m2 is None else _spread(m2, 2, 1, 1, full))
    return self_pair(m1), m12, self_pair(m2)


def _zero(mat: Optional[Tensor], m: Optional[Tensor]) -> Optional[Tensor]:
    if mat is None or m is None or mat.ndim == 0:
        return mat
    return mat.masked_fill(m, 0.0)


def remask(k: Kernel) -> Kernel:
    """Zero every covariance between a masked position and anything (no-op without masks)."""
    if k.mask1 is None and k.mask2 is None:
        return k
    m11, m12, m22 = pair_masks(k)
    return k.replace(nngp=_zero(k.nngp, m12), ntk=_zero(k.ntk, m12), cov1=_zero(k.cov1, m11),
                     cov2=_zero(k.cov2, m22))


def window_mask(m: Optional[Tensor], window: Sequence[int], strides: Sequence[int],
                padding: str) -> Optional[Tensor]:
    """Output mask of a convolution / pooling window: the mask at each window's centre
    (neural-tangents' ``_pool_mask``); CIRCULAR windows are centred as SAME ones."""
    if m is None:
        return None
    pad = "SAME" if padding == "CIRCULAR" else padding
    for i, (f, s) in enumerate(zip(window, strides)):
        n = m.shape[1 + i]
        out = conv_out_size(n, f, s, pad)
        start = (f - 1) // 2 - conv_pads(n, f, s, pad)[0]
        idx = torch.arange(out, device=m.device) * s + start
        m = m.index_select(1 + i, idx)
    return m


def all_masked(m: Optional[Tensor]) -> Optional[Tensor]:
    """(N, *S) -> (N,): an example is masked when all its positions are."""
    if m is None or m.ndim == 1:
        return m
    return m.flatten(1).all(1)


def unmasked_counts(m: Tensor, dtype: torch.dtype) -> Tensor:
    """Number of unmasked positions per example (at least 1), shape (N,)."""
    return (~m).flatten(1).sum(1).clamp(min=1).to(dtype)


def merge_masks(masks: Sequence[Optional[Tensor]]) -> Optional[Tensor]:
    """Mask of a sum / product / concatenation of branches: masked where every branch is
    (neural-tangents' ``_sum_masks``); a branch without a mask masks nothing."""
    if any(m is None for m in masks):
        return None
    out = masks[0]
    for m in masks[1:]:
        out = out & m
    return out


def map_masks(k: Kernel, fn) -> Kernel:
    """``k`` with ``fn`` applied to each of its masks (no-op without masks)."""
    if k.mask1 is None and k.mask2 is None:
        return k
    return k.replace(mask1=None if k.mask1 is None else fn(k.mask1),
                     mask2=None if k.mask2 is None else fn(k.mask2))
