"""Serial spatial chains and one pass of such a chain over a band of positions.

Spatial blocking (:mod:`widelimit.scale.spatial`) handles architectures of the form

    [Conv | AvgPool | SumPool | nonlinearity | LayerNorm]*
        ->  GlobalAvgPool | GlobalSumPool | Flatten  ->  tail

(nested ``serial`` allowed; the tail acts on the small (N1, N2) kernel and may be
anything).  :func:`split_architecture` recognises it; :func:`build_steps` records each
layer's geometry along the first spatial axis; :func:`make_band` propagates a set of
output positions back through the chain (:func:`widelimit.scale.bands.back_indices`);
:func:`run_band` pushes the band of the input covariance forward through the same
layer rules as the unblocked computation:

* Conv: :func:`widelimit.kernels.rules.conv.conv_rule` with the spatial sum replaced by
  the band's shifted sums on the first axis pair (other axes as usual);
* AvgPool / SumPool: box sums on each side of the first axis pair, then the usual
  per-axis pooling;
* nonlinearities and LayerNorm: their own rules, given the per-position variances of the
  two sides (``var(step, kernel)``) in the diagonal-spatial broadcast layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from widelimit.kernels.rules.conv import _diag_of_pairs, conv_out_size, conv_pads, diag_box_sum
from widelimit.kernels.rules.pool import map_kernel, pool_axis, pool_weights, scale_axis
from widelimit.kernels.state import Kernel
if TYPE_CHECKING:
    from widelimit.layers.base import Layer
from widelimit.scale.bands import (Run, axis_shift_sum, back_indices, band_inputs, pair_shift_sum,
                                   shift_runs)

__all__ = ["SUPPORTED", "Step", "Band", "split_architecture", "build_steps", "make_band", "run_band",
           "as_cov", "diag_variances", "peak_numel"]

SUPPORTED = ("a serial chain of Conv (any padding / strides), AvgPool / SumPool, elementwise "
             "nonlinearities and LayerNorm, then GlobalAvgPool, GlobalSumPool or Flatten")


def _leaves(net: Layer) -> list[Layer]:
    from widelimit.layers.combinators import Identity, Serial
    if type(net) is Serial:
        return [leaf for layer in net.layers for leaf in _leaves(layer)]
    return [] if type(net) is Identity else [net]


def split_architecture(net: Layer) -> Union[str, tuple[list[Layer], Layer, list[Layer]]]:
    """``(chain, reducer, tail)``, or a string saying why spatial blocking does not apply."""
    # the layer types are imported here: scale/ imports no layers/ module at import time
    from widelimit.layers.conv import Conv
    from widelimit.layers.nonlinear import Nonlinearity
    from widelimit.layers.normalization import LayerNorm
    from widelimit.layers.pool import GlobalAvgPool, _Pool
    from widelimit.layers.reshape import Flatten
    layers = _leaves(net)
    for i, layer in enumerate(layers):
        if isinstance(layer, (GlobalAvgPool, Flatten)):
            return layers[:i], layer, layers[i + 1:]
        ok = (type(layer) is Conv                    # not ConvLocal, ConvTranspose
              or isinstance(layer, (_Pool, Nonlinearity))
              or (isinstance(layer, LayerNorm) and layer.axis == 1))
        if not ok:
            return f"layer {i} ({layer!r}) is not supported; spatial blocking handles {SUPPORTED}"
    return f"the architecture does not end its spatial part with a reducing layer; spatial " \
           f"blocking handles {SUPPORTED}"


@dataclass(frozen=True)
class Step:
    """One layer of the chain with its geometry: spatial sizes in/out, window, strides."""
    layer: Layer
    kind: str                      # "conv", "pool" or "point"
    n_in: tuple[int, ...]
    n_out: tuple[int, ...]
    f: tuple[int, ...] = ()
    s: tuple[int, ...] = ()
    padding: str = "VALID"

    def axis0(self) -> tuple[int, int, int, int, bool]:
        """(n_in, f, s, lo, circular) of the first spatial axis."""
        lo = conv_pads(self.n_in[0], self.f[0], self.s[0], self.padding)[0]
        return self.n_in[0], self.f[0], self.s[0], lo, self.padding == "CIRCULAR"

    def back(self, idx: list[int]) -> list[int]:
        return idx if self.kind == "point" else back_indices(idx, *self.axis0())

    def runs(self, out_idx: list[int], in_idx: list[int]) -> Optional[list[list[Run]]]:
        return None if self.kind == "point" else shift_runs(out_idx, in_idx, *self.axis0())


def build_steps(chain: Sequence[Layer], shape: tuple) -> list[Step]:
    """Geometry of each layer for inputs of ``shape`` (N, C, *S); raises the layers' errors."""
    from widelimit.layers.conv import Conv, check_spatial
    from widelimit.layers.pool import _Pool
    steps, n = [], tuple(shape[2:])
    for layer in chain:
        if isinstance(layer, (Conv, _Pool)):
            conv = isinstance(layer, Conv)
            f = layer.filter_shape if conv else layer.window_shape
            check_spatial((0, 0) + n, len(f), type(layer).__name__)
            name = "filter_shape" if conv else "window_shape"
            out = tuple(conv_out_size(a, b, c, layer.padding, name)
                        for a, b, c in zip(n, f, layer.strides))
            steps.append(Step(layer, "conv" if conv else "pool", n, out, tuple(f),
                              tuple(layer.strides), layer.padding))
            n = out
        else:
            steps.append(Step(layer, "point", n, n))
    return steps


@dataclass(frozen=True)
class Band:
    """Positions of the first spatial axis kept at every stage (stage l = input of step l,
    the last stage = the chain's output), on the x1 side (rows) and the x2 side (cols)."""
    rows: list[list[int]]
    cols: list[list[int]]
    runs: list[Optional[tuple[list[list[Run]], list[list[Run]]]]]


def make_band(steps: Sequence[Step], rows_out: list[int], cols_out: list[int]) -> Band:
    rows, cols = [rows_out], [cols_out]
    for st in reversed(steps):
        rows.insert(0, st.back(rows[0]))
        cols.insert(0, rows[0] if cols[0] is rows[1] else st.back(cols[0]))
    runs = []
    for i, st in enumerate(steps):
        rr = st.runs(rows[i + 1], rows[i])
        runs.append(None if rr is None else
                    (rr, rr if cols[i] is rows[i] else st.runs(cols[i + 1], cols[i])))
    return Band(rows, cols, runs)


def as_cov(d: Tensor, side: int) -> Tensor:
    """Variances (b, S1, S2, ..) reshaped so that the diagonal-layout broadcast of
    :func:`widelimit.kernels.state.pair_variances` (``cov1.unsqueeze(1)``,
    ``cov2.unsqueeze(0)``) lines them up with a band (b1, b2, S1, S1', S2, S2', ..)."""
    shape = [d.shape[0]]
    for n in d.shape[1:]:
        shape += [n, 1] if side == 1 else [1, n]
    return d.reshape(shape)


def diag_variances(nngp: Tensor) -> Tensor:
    """Same-position entries (b, R, S2, ..) of a square band of one input with itself."""
    return _diag_of_pairs(nngp, 2)[:, 0]


VarFn = Callable[[int, Kernel], tuple[Tensor, Tensor]]


def _conv_step(st: Step, k: Kernel, runs, n_r: int, n_c: int) -> Kernel:
    def sums(mat: Optional[Tensor], _batch_ndim: int) -> Optional[Tensor]:
        if mat is None or mat.ndim == 0:
            return mat
        out = pair_shift_sum(mat, 2, runs[0], runs[1], n_r, n_c)
        for i in range(1, len(st.f)):
            out = diag_box_sum(out, 2 + 2 * i, st.f[i], st.s[i], st.padding)
        return out
    return st.layer.apply_kernel(k, sums=sums)  # type: ignore[call-arg]  # a Conv


def _pool_step(st: Step, k: Kernel, runs, rows_out: list[int], cols_out: list[int]) -> Kernel:
    layer = st.layer
    avg, edges = layer.average, layer.normalize_edges  # type: ignore[attr-defined]  # a _Pool

    def fn(mat: Tensor, _batch_ndim: int) -> Tensor:
        if mat.ndim == 0:
            return mat
        w = pool_weights(st.n_in[0], st.f[0], st.s[0], st.padding, avg, edges, mat)
        out = mat
        for ax, rr, idx in ((2, runs[0], rows_out), (3, runs[1], cols_out)):
            out = axis_shift_sum(out, ax, rr, len(idx))
            if w is not None:
                out = scale_axis(out, ax, w[torch.tensor(idx, device=w.device)])
        for i in range(1, len(st.f)):
            for ax in (2 + 2 * i, 3 + 2 * i):
                out = pool_axis(out, ax, st.f[i], st.s[i], st.padding, avg, edges)
        return out
    return map_kernel(k, fn, shape1=k.shape1[:2] + st.n_out, shape2=k.shape2[:2] + st.n_out)


def run_band(steps: Sequence[Step], band: Band, xa: Tensor, xb: Tensor, var: VarFn,
             want_ntk: bool) -> Kernel:
    """The band of the chain's output kernel between the blocks ``xa`` and ``xb``.

    ``var(l, k)`` gives the variances at stage l as ``(cov1, cov2)`` in the layout of
    :func:`as_cov`; it is called only before nonlinearities and LayerNorm.  The returned
    Kernel holds the band in ``nngp`` / ``ntk`` and the full shapes in ``shape1`` /
    ``shape2``; its ``cov1`` is a 0-d placeholder.
    """
    zero = xa.new_zeros(())
    k = Kernel(nngp=band_inputs(xa, xb, band.rows[0], band.cols[0]),
               ntk=zero if want_ntk else None, cov1=zero, cov2=None, x1_is_x2=False,
               is_gaussian=False, shape1=tuple(xa.shape), shape2=tuple(xb.shape), is_input=True,
               diagonal_spatial=False)
    for i, st in enumerate(steps):
        if st.kind == "conv":
            k = _conv_step(st, k, band.runs[i], len(band.rows[i + 1]), len(band.cols[i + 1]))
        elif st.kind == "pool":
            k = _pool_step(st, k, band.runs[i], band.rows[i + 1], band.cols[i + 1])
        else:
            cov1, cov2 = var(i, k)
            k = st.layer.apply_kernel(k.replace(cov1=cov1, cov2=cov2, diagonal_spatial=True))
            k = k.replace(cov1=zero, cov2=None, diagonal_spatial=False)
    return k


def peak_numel(steps: Sequence[Step], shape: tuple, r: Sequence[int], c: Sequence[int],
               pad_first: bool) -> int:
    """Largest pair tensor (per pair of inputs) of a pass whose first axis pair holds r[l] x
    c[l] positions at stage l: the stages themselves and CIRCULAR padding's copies
    (``pad_first``: the first axis is padded too, as in the unblocked computation)."""
    n0 = tuple(shape[2:])
    sizes = [st.n_in for st in steps] + [steps[-1].n_out if steps else n0]
    ext = [[r[i] * c[i]] + [n * n for n in sizes[i][1:]] for i in range(len(sizes))]
    best = max(math.prod(e) for e in ext)
    for i, st in enumerate(steps):
        if st.kind == "point" or st.padding != "CIRCULAR":
            continue
        e = list(ext[i])
        for ax in range(len(st.n_in)):
            if ax or pad_first:
                lo, hi = conv_pads(st.n_in[ax], st.f[ax], st.s[ax], st.padding)
                padded = (st.n_in[ax] + lo + hi) ** 2
                best = max(best, math.prod(e[:ax]) * padded * math.prod(e[ax + 1:]))
            e[ax] = ext[i + 1][ax]
    return int(best)
