"""Pooling, flattening, global pooling, indexing and resizing of spatial kernels.

Pooling is linear, so for ``y[a] = sum_{d in window} w_a z[s a + d]`` the covariance
pools independently over each position of the pair (Novak et al. 2019, Sec. 3.2;
the "LAP" of Arora et al. 2019):

    K'[a, a'] = sum_{d, d'} w_a w_a' K[s a + d, s a' + d']

which is separable: one strided box filter along S_i and one along S_i' per spatial
dimension (:func:`widelimit.kernels.rules.conv.box_sum`).  AvgPool divides by the
window size (or, with ``normalize_edges`` and SAME padding, by the number of valid
positions of each window, as ``torch.nn.AvgPool2d(count_include_pad=False)``).

Global average pooling is the mean over all position pairs; Flatten followed by a
dense layer sees the mean over the *diagonal* (same-position) entries
(neural-tangents' ``Flatten``), so Flatten works in the diagonal-spatial layout too.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from widelimit.kernels.rules.conv import box_sum, conv_out_size, spatial_map
from widelimit.kernels.masking import all_masked, remask, unmasked_counts
from widelimit.kernels.state import Kernel, _diag_spatial

__all__ = ["pool_rule", "pool_axis", "pool_weights", "scale_axis", "global_pool_rule", "flatten_rule",
           "map_kernel"]


def map_kernel(k: Kernel, fn, **changes) -> Kernel:
    """Apply ``fn(mat, batch_ndim)`` to nngp, ntk (unless 0-d), cov1 and cov2."""
    ntk = k.ntk if k.ntk is None or k.ntk.ndim == 0 else fn(k.ntk, 2)
    return k.replace(nngp=fn(k.nngp, 2), ntk=ntk, cov1=fn(k.cov1, 1),
                     cov2=None if k.cov2 is None else fn(k.cov2, 1), **changes)


def _edge_counts(n: int, f: int, s: int, padding: str, like: Tensor) -> Tensor:
    ones = torch.ones(n, dtype=like.dtype, device=like.device)
    return box_sum(ones, 0, f, s, padding)


def scale_axis(x: Tensor, axis: int, w: Tensor) -> Tensor:
    shape = [1] * x.ndim
    shape[axis] = w.shape[0]
    return x * w.reshape(shape)


def pool_weights(n: int, f: int, s: int, padding: str, average: bool, normalize_edges: bool,
                 like: Tensor) -> Optional[Tensor]:
    """Per-output-position weights of one pooled axis of size ``n`` (None for SumPool)."""
    if not average:
        return None
    if normalize_edges and padding == "SAME":
        return 1.0 / _edge_counts(n, f, s, padding, like)
    out_n = conv_out_size(n, f, s, padding, "window_shape")
    return torch.full((out_n,), 1.0 / f, dtype=like.dtype, device=like.device)


def pool_axis(x: Tensor, axis: int, f: int, s: int, padding: str, average: bool,
              normalize_edges: bool) -> Tensor:
    """Pool one axis of ``x``: a strided box sum, times :func:`pool_weights`."""
    w = pool_weights(x.shape[axis], f, s, padding, average, normalize_edges, x)
    out = box_sum(x, axis, f, s, padding)
    return out if w is None else scale_axis(out, axis, w)


def pool_rule(k: Kernel, window: Sequence[int], strides: Sequence[int], padding: str,
              average: bool, normalize_edges: bool) -> Kernel:
    """Kernel after AvgPool / SumPool with the given window, strides and padding."""
    if k.diagonal_spatial and k.n_spatial:
        raise ValueError("Pooling needs the full spatial covariance (diagonal_spatial=False).")

    def one_axis(x: Tensor, axis: int, i: int) -> Tensor:
        return pool_axis(x, axis, window[i], strides[i], padding, average, normalize_edges)

    def full(x: Tensor, axis: int, i: int) -> Tensor:
        return one_axis(one_axis(x, axis, i), axis + 1, i)

    def fn(mat, batch_ndim):
        return spatial_map(mat, batch_ndim, False, None, full)

    def shape(sh: tuple) -> tuple:
        sp = tuple(conv_out_size(n, f, s, padding, "window_shape")
                   for n, f, s in zip(sh[2:], window, strides))
        return sh[:2] + sp

    return map_kernel(k, fn, shape1=shape(k.shape1), shape2=shape(k.shape2))


def global_pool_rule(k: Kernel, average: bool, sums: Optional[dict] = None) -> Kernel:
    """GlobalAvgPool / GlobalSumPool: sum (or mean) over all pairs of positions.

    With masks (covariances already zero at masked positions) the mean is over the
    unmasked positions of each input: the pair sum is divided by c1 c2, the numbers of
    unmasked positions (neural-tangents' masked ``mean_and_var``).  ``sums``: the sums
    over the position pairs of some of ``nngp``, ``ntk``, ``cov1``, ``cov2`` (by name)
    when they are already known (a fused nonlinearity and pooling, ``fused.native_pool``);
    those fields of ``k`` are then not read.
    """
    if not k.n_spatial:
        raise ValueError(f"Global pooling needs spatial inputs, got shape {k.shape1}.")
    if k.diagonal_spatial:
        raise ValueError("Global pooling needs the full spatial covariance (diagonal_spatial=False).")
    size = 1
    for n in k.shape1[2:]:
        size *= n
    dtype = k.nngp.dtype

    def counts(m):
        if m is None:
            return torch.full((), float(size), dtype=dtype, device=k.nngp.device)
        return unmasked_counts(m, dtype)

    c1 = counts(k.mask1)
    c2 = c1 if k.x1_is_x2 else counts(k.mask2)

    sums = sums or {}

    def fn(name: str, batch_ndim: int, norm: Tensor) -> Optional[Tensor]:
        mat = getattr(k, name)
        if name in sums:
            out = sums[name]
        elif mat is None or mat.ndim == 0:       # no NTK, or the zero NTK of the inputs
            return mat
        else:
            out = mat.sum(tuple(range(batch_ndim, mat.ndim)))
        return out / norm if average and out is not None else out

    c12 = (c1[:, None] if c1.ndim else c1) * c2
    return k.replace(nngp=fn("nngp", 2, c12), ntk=fn("ntk", 2, c12), cov1=fn("cov1", 1, c1 * c1),
                     cov2=fn("cov2", 1, c2 * c2),
                     shape1=k.shape1[:2], shape2=k.shape2[:2], diagonal_spatial=True,
                     mask1=all_masked(k.mask1), mask2=all_masked(k.mask2))


def flatten_rule(k: Kernel) -> Kernel:
    """Flatten: the mean over same-position entries (what a following Dense layer sees)."""
    if not k.n_spatial:
        return k

    def fn(mat: Tensor, batch_ndim: int) -> Tensor:
        d = mat if k.diagonal_spatial else _diag_spatial_b(mat, batch_ndim)
        return d.mean(tuple(range(batch_ndim, d.ndim)))

    width1 = 1
    for n in k.shape1[1:]:
        width1 *= n
    k = remask(k)
    return map_kernel(k, fn, shape1=(k.shape1[0], width1), shape2=(k.shape2[0], width1),
                      is_gaussian=False, diagonal_spatial=True, mask1=all_masked(k.mask1),
                      mask2=all_masked(k.mask2))


def _diag_spatial_b(mat: Tensor, batch_ndim: int) -> Tensor:
    if batch_ndim == 1:
        return _diag_spatial(mat, (mat.ndim - 1) // 2)
    n_sp = (mat.ndim - 2) // 2
    for _ in range(n_sp):
        mat = torch.diagonal(mat, dim1=2, dim2=3)
    return mat

