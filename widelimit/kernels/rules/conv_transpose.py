"""Transposed convolution kernels (``neural_tangents.stax.ConvTranspose`` semantics).

A transposed convolution with filter ``F`` and stride ``s`` is, as in
``jax.lax.conv_transpose``, a stride-1 correlation of the input dilated by ``s``
(``s - 1`` zeros between neighbours) and zero-padded by ``(lo, hi)`` per axis:

    y[o] = sum_{d < f} W[d] x_dil[o + d - lo],    x_dil[s a] = x[a], 0 elsewhere.

With W ~ N(0, W_std^2 / (C |F|)) and infinitely many channels only simultaneous shifts
``d = d'`` survive, exactly as for :mod:`widelimit.kernels.rules.conv`:

    nngp'[o, o'] = W_std^2 / |F| * sum_{d in F} nngp_dil[o + d - lo, o' + d - lo] + b_std^2

and the NTK follows the same affine recursion.  Since the dilation makes most terms
zero, each output position sums about ``|F| / s`` input covariances, still divided by
|F| (the fan-in of the weights).  Per axis the output has ``n s`` positions (SAME,
CIRCULAR) or ``n s + max(f - s, 0)`` (VALID); CIRCULAR computes the VALID result and
folds it onto the SAME size by adding the positions that a periodic padding of the
output would have produced (neural-tangents' ``_same_pad_for_filter_shape_transpose``).

Only the diagonal of the input covariance enters the diagonal of the output (also under
CIRCULAR: folded positions come from input positions ``n`` apart), so the cheap
diagonal-spatial layout is exact, as for Conv.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from widelimit.kernels.rules.conv import box_sum, conv_rule, diag_box_sum, pad_axis, spatial_map
from widelimit.kernels.state import Kernel

__all__ = ["transpose_pads", "transpose_out_size", "dilate_axis", "wrap_axis",
           "conv_transpose_axes", "conv_transpose_rule"]


def transpose_pads(f: int, s: int, padding: str) -> tuple[int, int]:
    """(lo, hi) zero padding of the dilated input, as ``jax.lax.conv_transpose``
    (CIRCULAR uses VALID's before folding)."""
    if padding == "SAME":
        total = f + s - 2
        lo = f - 1 if s > f - 1 else -(-total // 2)
    else:
        total = f + s - 2 + max(f - s, 0)
        lo = f - 1
    return lo, total - lo


def transpose_out_size(n: int, f: int, s: int, padding: str) -> int:
    """Output size along one axis: ``n s`` (SAME, CIRCULAR) or ``n s + max(f - s, 0)``."""
    return n * s if padding in ("SAME", "CIRCULAR") else n * s + max(f - s, 0)


def dilate_axis(x: Tensor, axis: int, s: int) -> Tensor:
    """Insert ``s - 1`` zeros between neighbours along ``axis``: n -> (n - 1) s + 1."""
    if s == 1:
        return x
    n = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = (n - 1) * s + 1
    out = x.new_zeros(shape)
    idx = [slice(None)] * x.ndim
    idx[axis] = slice(None, None, s)
    out[tuple(idx)] = x
    return out


def wrap_axis(x: Tensor, axis: int, n_out: int) -> Tensor:
    """Fold ``axis`` (size X >= n_out) onto ``n_out`` positions, centred, as
    neural-tangents does for CIRCULAR transposed convolutions:
    ``out[o] = sum_{|j| <= h} x[o + (X - n_out) // 2 + j n_out]`` (in range), with
    ``h = ceil(X / n_out) // 2``."""
    size = x.shape[axis]
    if size == n_out:
        return x
    h = (-(-size // n_out)) // 2
    lo = (size - n_out) // 2
    shape = list(x.shape)
    shape[axis] = n_out
    out = x.new_zeros(shape)
    for j in range(-h, h + 1):
        start = lo + j * n_out
        o0, o1 = max(0, -start), min(n_out, size - start)
        if o1 > o0:
            out.narrow(axis, o0, o1 - o0).add_(x.narrow(axis, start + o0, o1 - o0))
    return out


def conv_transpose_axes(x: Tensor, axes: tuple, f: int, s: int, padding: str) -> Tensor:
    """``out[o, ..] = sum_{d<f} x_dil_pad[o + d, ..]`` on every axis in ``axes`` at once
    (one axis: the transposed box filter; an interleaved pair: its diagonal version),
    then the CIRCULAR fold onto ``n_out`` positions."""
    n = x.shape[axes[0]]
    lo, hi = transpose_pads(f, s, padding)
    for ax in axes:
        x = pad_axis(dilate_axis(x, ax, s), ax, lo, hi, False)
    x = (box_sum if len(axes) == 1 else diag_box_sum)(x, axes[0], f, 1, "VALID")
    if padding == "CIRCULAR":
        for ax in axes:
            x = wrap_axis(x, ax, transpose_out_size(n, f, s, padding))
    return x


def conv_transpose_rule(k: Kernel, filter_shape: Sequence[int], strides: Sequence[int],
                        padding: str, W_std, b_std, parameterization: str, s0: float,
                        out_channels: int) -> Kernel:
    """Kernel after a transposed convolution with infinitely many channels (module docstring)."""
    def sums(mat, batch_ndim):
        return spatial_map(
            mat, batch_ndim, k.diagonal_spatial,
            lambda x, a, i: conv_transpose_axes(x, (a,), filter_shape[i], strides[i], padding),
            lambda x, a, i: conv_transpose_axes(x, (a, a + 1), filter_shape[i], strides[i],
                                                padding))

    return conv_rule(k, filter_shape, strides, padding, W_std, b_std, parameterization, s0,
                     out_channels, sums=sums, out_size=transpose_out_size)
