"""Bands of a full spatial kernel: index maps and the tensor operations on them.

A *band* of a pair kernel keeps, on the first spatial axis, only some positions of the
x1 side (``rows``, sorted actual indices) and of the x2 side (``cols``); the other spatial
axes stay whole.  Its tensor has the usual interleaved layout
``(b1, b2, len(rows), len(cols), S2, S2', ...)``.

Convolution and pooling are local: output position ``a`` of a layer with window ``f``,
stride ``s`` and low padding ``lo`` reads the input positions ``s a + d - lo``
(``d < f``), taken modulo the size for CIRCULAR padding and dropped (zero padding)
outside the input otherwise.  :func:`back_indices` gives the input positions a set of
output positions needs (the band plus its halo); :func:`shift_runs` turns the map
"output position -> input position" of each ``d`` into runs of strided slices, so that
every operation on a band is a few in-place adds of strided views, as for whole kernels
(:mod:`widelimit.kernels.rules.conv`).  The band of the output is then exact: it equals
the same entries of the unblocked computation.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from widelimit.kernels.state import _interleave

__all__ = ["Run", "back_indices", "shift_runs", "pair_shift_sum", "axis_shift_sum", "band_inputs",
           "index_axis"]

#: (first output position, first input position, length, input step)
Run = tuple[int, int, int, int]


def _source(a: int, d: int, n_in: int, s: int, lo: int, circular: bool) -> Optional[int]:
    t = s * a + d - lo
    if circular:
        return t % n_in
    return t if 0 <= t < n_in else None


def back_indices(out_idx: Sequence[int], n_in: int, f: int, s: int, lo: int,
                 circular: bool) -> list[int]:
    """Sorted input positions read by the output positions ``out_idx`` (band + halo)."""
    need = {_source(a, d, n_in, s, lo, circular) for a in out_idx for d in range(f)}
    need.discard(None)
    return sorted(need)


def _runs(src: list[Optional[int]]) -> list[Run]:
    """Split ``dst -> src[dst]`` (None: zero padding) into runs with dst step 1 and a
    constant positive src step."""
    runs, i, n = [], 0, len(src)
    while i < n:
        if src[i] is None:
            i += 1
            continue
        j, step = i + 1, 0
        while j < n and src[j] is not None:
            diff = src[j] - src[j - 1]
            if (step == 0 and diff <= 0) or (step and diff != step):
                break
            step, j = diff, j + 1
        runs.append((i, src[i], j - i, step or 1))
        i = j
    return runs


def shift_runs(out_idx: Sequence[int], in_idx: Sequence[int], n_in: int, f: int, s: int, lo: int,
               circular: bool) -> list[list[Run]]:
    """For each window offset ``d``: the runs mapping positions of ``out_idx`` (output band)
    to positions in ``in_idx`` (input band) that hold ``s a + d - lo``."""
    where = {j: p for p, j in enumerate(in_idx)}
    out = []
    for d in range(f):
        src = []
        for a in out_idx:
            t = _source(a, d, n_in, s, lo, circular)
            src.append(None if t is None else where[t])   # KeyError: halo too small (a bug)
        out.append(_runs(src))
    return out


def _view(ndim: int, axes: Sequence[int], slices: Sequence[slice]) -> tuple:
    idx = [slice(None)] * ndim
    for ax, sl in zip(axes, slices):
        idx[ax] = sl
    return tuple(idx)


def _dst_src(run: Run) -> tuple[slice, slice]:
    d0, s0, length, step = run
    return slice(d0, d0 + length), slice(s0, s0 + step * (length - 1) + 1, step)


def pair_shift_sum(x: Tensor, axis: int, runs_r: list[list[Run]], runs_c: list[list[Run]],
                   n_r: int, n_c: int) -> Tensor:
    """``out[.., i, j, ..] = sum_d x[.., r_d(i), c_d(j), ..]`` on the axis pair (axis, axis+1):
    the simultaneous shift of a convolution, on a band."""
    shape = list(x.shape)
    shape[axis], shape[axis + 1] = n_r, n_c
    out = x.new_zeros(shape)
    for rr, cc in zip(runs_r, runs_c):
        for r in rr:
            dr, sr = _dst_src(r)
            for c in cc:
                dc, sc = _dst_src(c)
                out[_view(x.ndim, (axis, axis + 1), (dr, dc))].add_(
                    x[_view(x.ndim, (axis, axis + 1), (sr, sc))])
    return out


def axis_shift_sum(x: Tensor, axis: int, runs: list[list[Run]], n_out: int) -> Tensor:
    """``out[.., i, ..] = sum_d x[.., r_d(i), ..]`` along one axis: a box filter on a band."""
    shape = list(x.shape)
    shape[axis] = n_out
    out = x.new_zeros(shape)
    for rr in runs:
        for r in rr:
            dr, sr = _dst_src(r)
            out[_view(x.ndim, (axis,), (dr,))].add_(x[_view(x.ndim, (axis,), (sr,))])
    return out


def index_axis(x: Tensor, axis: int, idx: Sequence[int]) -> Tensor:
    """``x`` restricted to positions ``idx`` along ``axis`` (a view when they are contiguous)."""
    if len(idx) == x.shape[axis] or (len(idx) and idx[-1] - idx[0] == len(idx) - 1):
        return x.narrow(axis, idx[0], len(idx)) if len(idx) else x.narrow(axis, 0, 0)
    return x.index_select(axis, torch.tensor(list(idx), device=x.device))


def band_inputs(xa: Tensor, xb: Tensor, rows: Sequence[int], cols: Sequence[int]) -> Tensor:
    """Band of the input covariance ``x1 . x2 / C``: (b1, b2, R, Cc, S2, S2', ...)."""
    c = xa.shape[1]
    a = index_axis(xa, 2, rows)
    b = index_axis(xb, 2, cols)
    sp_a, sp_b = tuple(a.shape[2:]), tuple(b.shape[2:])
    out = torch.einsum("acp,bcq->abpq", a.flatten(2), b.flatten(2)) / c
    return _interleave(out.reshape(out.shape[:2] + sp_a + sp_b), 2, len(sp_a))
