"""Spatial blocking: image kernels whose single pair does not fit the memory budget.

The full spatial covariance of one pair of 64x64 images has 64^4 = 16.8M entries per
tensor (128x128: 268M), and a layer rule holds several such tensors.  When even one pair
does not fit ``max_memory``, :func:`spatial_kernel` computes the kernel of a serial chain
(:data:`widelimit.scale.chain.SUPPORTED`) in bands of positions of x1's first spatial axis:

1. *Bands.*  The chain's output rows are cut into bands of ``h`` rows.  Convolution and
   pooling are local, so a band of a layer's output needs only the same band plus a halo
   (the receptive field, scaled by the strides; wrapped for CIRCULAR padding) of the layer's
   input; propagated back to the input, the band of the pair's input covariance gives
   the exact band of the output (:mod:`widelimit.scale.bands`).
2. *Variances.*  Nonlinearities and LayerNorm need the per-position variances of x1 and
   x2 at their inputs.  The diagonal of a square band (the same rows on both sides) of
   one input with itself is exact, and square bands are closed under the backward
   propagation, so the variance maps at every stage come from square bands of each input
   against itself (the nonlinearities there use the band's own diagonal).  Positions
   that no output reads are never computed (they stay NaN and are never read).
3. *Reduction.*  GlobalAvgPool / GlobalSumPool sum each band over all positions of the
   x2 side (so the x2 side is whole); Flatten needs only same-position entries, so its
   bands are square.  The sums over bands give the (N1, N2) kernel; the layers after the
   reducing one act on it as usual.

``cov1`` / ``cov2`` after the reduction: Flatten's is the mean variance; global pooling's
is each input's kernel with itself (the diagonal of the result for ``x2 = None``, else
one extra pass per input).

Band height and blocks of pairs come from the budget, measured as in
:func:`widelimit.scale.blocking.plan_blocks`: a probe runs a one-row band of one pair under
:class:`widelimit.scale.blocking.PeakBytes` (the largest tensor, and the bytes the allocator
holds at the peak where it can tell: thin bands keep more tensors alive than the
``LIVE_TENSORS`` of whole pairs); the geometry (:func:`widelimit.scale.chain.peak_numel`)
scales that to ``h`` rows; the largest ``h`` whose bands fit next to the result, the inputs
and the variance maps is taken.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import torch
from torch import Tensor

from widelimit.kernels.rules.conv import _diag_of_pairs
from widelimit.kernels.state import Kernel
if TYPE_CHECKING:
    from widelimit.layers.base import Layer
from widelimit.scale.bands import index_axis
from widelimit.scale.blocking import (LIVE_TENSORS, PeakBytes, _fmt, _slices, mirror_lower,
                                      resolve_budget)
from widelimit.scale.chain import (Band, Step, as_cov, build_steps, diag_variances, make_band,
                                   peak_numel, run_band, split_architecture)
from widelimit.scale.threads import parallel_map

__all__ = ["spatial_kernel", "maybe_spatial_kernel", "check_option", "supports", "budget_hint"]

Option = Union[None, bool, int]

#: bands run on a thread pool when a one-row band's largest tensor has this many elements
THREADED_BANDS_FROM = 2**18
#: the allocator's measured peak is used when the probe's largest tensor has this many bytes
TRUST_ALLOCATOR_FROM = 2**20
#: bands are kept (if the halo allows) to largest tensors of at most this many bytes, below
#: glibc's largest mmap threshold (32 MB), above which every tensor costs fresh pages
#: (64x64 images, float32, one thread: bands of 4-16 rows 1.5-1.8 s, 32 rows 3.5 s, 64 rows 5.5 s)
BAND_BYTES = 2**24


def check_option(option: Any) -> Option:
    if option is None or isinstance(option, bool):
        return option
    if isinstance(option, int) and option >= 1:
        return option
    raise ValueError(f"`spatial_blocking` must be None (automatic), True, False or a positive "
                     f"number of output rows per band, got {option!r}.")


def supports(net: Layer) -> bool:
    return not isinstance(split_architecture(net), str)


def budget_hint(net: Layer) -> str:
    """Appended to the whole-pair planner's error when one pair does not fit."""
    split = split_architecture(net)
    if isinstance(split, str):
        return f" Spatial blocking (bands of positions) does not apply: {split}."
    return " Or pass spatial_blocking=True to compute it in bands of positions."


def _full_pair_numel(steps: list[Step], shape: tuple) -> int:
    sizes = [st.n_in[0] for st in steps] + [steps[-1].n_out[0] if steps else shape[2]]
    return peak_numel(steps, shape, sizes, sizes, True)


def maybe_spatial_kernel(net: Layer, x1: Tensor, x2: Optional[Tensor], max_memory: Any,
                         option: Option) -> Optional[Kernel]:
    """The kernel by spatial blocking when ``option`` forces it, or, for ``option=None``,
    when the architecture allows it and one pair of full spatial covariances would not fit
    ``max_memory`` (the whole-pair planner's rule on the geometry's largest tensor); else
    None (the caller then blocks over pairs only)."""
    if option is False or (option is None and x1.ndim <= 2):
        return None
    if option is None:
        split = split_architecture(net)
        if isinstance(split, str):
            return None
        steps = build_steps(split[0], tuple(x1.shape))
        item = x1.element_size()
        n2 = x1.shape[0] if x2 is None else x2.shape[0]
        one_pair = 3 * LIVE_TENSORS * _full_pair_numel(steps, tuple(x1.shape)) * item
        fixed = (2 * x1.shape[0] * n2 + x1.numel() + (0 if x2 is None else x2.numel())) * item
        if one_pair + fixed <= resolve_budget(max_memory, x1.device):
            return None
    return spatial_kernel(net, x1, x2, max_memory, None if option is True else option)


def _ones_var(steps: list[Step], band: Band, xa: Tensor, xb: Tensor):
    def var(i: int, k: Kernel):
        n = steps[i].n_in[1:]
        d1 = xa.new_ones((xa.shape[0], len(band.rows[i])) + n)
        d2 = xb.new_ones((xb.shape[0], len(band.cols[i])) + n)
        return as_cov(d1, 1), as_cov(d2, 2)
    return var


def _stage_counts(steps: list[Step], out_idx: list[int]) -> list[int]:
    """Positions of the first axis at every stage for the output positions ``out_idx``."""
    counts, idx = [len(out_idx)], out_idx
    for st in reversed(steps):
        idx = st.back(idx)
        counts.insert(0, len(idx))
    return counts


def _plan(steps: list[Step], shape: tuple, bands_of: Callable[[list[int]], Band], gap: bool,
          x1: Tensor, xb: Tensor, budget: int, fixed: int, rows: Optional[int],
          symmetric: bool) -> tuple[int, int, int, int]:
    """(h, b1, b2, workers): output rows per band, blocks of pairs, and how many bands run
    at once (CPU threads; each gets its share of the budget)."""
    n_last = steps[-1].n_out[0] if steps else shape[2]
    item = x1.element_size()
    cols_all = _stage_counts(steps, list(range(n_last))) if gap else None

    def band_numel(out_idx: list[int]) -> int:
        r = _stage_counts(steps, out_idx)
        return peak_numel(steps, shape, r, cols_all or r, False)

    def numel(h: int) -> int:          # the largest of the bands of h rows actually run
        return max(band_numel(list(range(a, min(a + h, n_last)))) for a in range(0, n_last, h))

    probe_band = bands_of([n_last // 2])
    xa, xc = x1[:1].clone(), xb[:1].clone()
    var = _ones_var(steps, probe_band, xa, xc)
    with torch.no_grad():
        run_band(steps, probe_band, xa, xc, var, True)   # warm-up: one-off allocations
        probe = PeakBytes(x1.device)
        with probe:
            run_band(steps, probe_band, xa, xc, var, True)
    # bytes per element of the geometry's largest tensor: LIVE_TENSORS such tensors, or
    # what the allocator measured (more live tensors for thin bands) when the tensors are
    # large enough to dwarf the allocations of Python objects
    probe_numel = band_numel([n_last // 2])
    live = LIVE_TENSORS * max(1.0, probe.max_numel / probe_numel)
    if probe.peak is not None and probe.max_numel * item >= TRUST_ALLOCATOR_FROM:
        live = max(live, probe.peak / (probe_numel * item))
    free = budget - fixed

    def unit(h: int) -> float:
        return live * numel(h) * item

    def largest(ok: Callable[[int], bool]) -> int:     # largest h with ok(h), or 1
        lo, hi = 1, n_last
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
        return lo

    # threads pay off for large bands only (small ones: Python and thread overheads)
    threads = torch.get_num_threads() if x1.device.type == "cpu" else 1
    if probe.max_numel < THREADED_BANDS_FROM:
        threads = 1
    workers = max(1, min(threads, int(free // unit(1))))
    if rows is None:
        if unit(1) > free:
            raise ValueError(
                f"`max_memory`={_fmt(budget)} is too small even for spatial blocking: one band of "
                f"one output row of one pair needs about {_fmt(unit(1))} (largest intermediate: "
                f"{probe.max_numel} elements) besides {_fmt(fixed)} for the result, inputs and "
                f"variance maps; pass max_memory of at least {_fmt(unit(1) + fixed)}.")
        # speed: tensors below glibc's mmap threshold stay in reused memory (no page faults)
        # and nearer the caches, but a band no shorter than the halo it recomputes; fewer
        # threads where sharing the budget would make the bands shorter than that
        quick = largest(lambda h: numel(h) * item <= BAND_BYTES)
        halo = _stage_counts(steps, [n_last // 2])[0] - 1
        target = min(max(quick, halo, 1), n_last)
        while True:
            fits = largest(lambda h: unit(h) <= free / workers)
            if fits >= target or workers == 1:
                break
            workers -= 1
        rows = min(fits, target)
    h = min(rows, n_last)
    cap = max(1.0, free / workers / unit(h))
    n1, n2 = x1.shape[0], xb.shape[0]
    if symmetric:
        b1 = b2 = max(1, min(n1, int(math.sqrt(cap))))
    else:
        b2 = max(1, min(n2, int(cap)))
        b1 = max(1, min(n1, int(cap // b2)))
    return h, b1, b2, workers


def _var_maps(steps: list[Step], x: Tensor, square: list[Band], need: list[int],
              workers: int) -> dict:
    """Per-position variances (N, *S_l) at the stages ``need``, from square bands (one
    thread per input; each writes only its own maps)."""
    sizes = [st.n_in for st in steps] + [steps[-1].n_out if steps else tuple(x.shape[2:])]
    last = len(steps)

    def one(i: int) -> dict:
        maps = {l: x.new_full(sizes[l], float("nan")) for l in need}
        xi = x[i:i + 1]
        for band in square:
            def var(l: int, k: Kernel, band=band):
                d = diag_variances(k.nngp)
                if l in maps:
                    maps[l].index_copy_(0, torch.tensor(band.rows[l], device=x.device), d[0])
                return as_cov(d, 1), as_cov(d, 2)
            k = run_band(steps, band, xi, xi, var, False)
            if last in maps:
                var(last, k)
        return maps

    per_input = parallel_map(one, list(range(x.shape[0])), x.device, workers)
    return {l: torch.stack([m[l] for m in per_input]) for l in need}


def _map_var(maps1: dict, s1: slice, maps2: dict, s2: slice, band: Band):
    def var(l: int, k: Kernel):
        d1 = index_axis(maps1[l][s1], 1, band.rows[l])
        d2 = index_axis(maps2[l][s2], 1, band.cols[l])
        return as_cov(d1, 1), as_cov(d2, 2)
    return var


def _reduce(k: Kernel, gap: bool) -> tuple[Tensor, Optional[Tensor]]:
    def red(mat: Optional[Tensor]) -> Optional[Tensor]:
        if mat is None or mat.ndim == 0:
            return mat
        if not gap:
            mat = _diag_of_pairs(mat, 2)
        return mat.sum(tuple(range(2, mat.ndim)))
    return red(k.nngp), red(k.ntk)


def spatial_kernel(net: Layer, x1: Tensor, x2: Optional[Tensor], max_memory: Any = None,
                   rows: Optional[int] = None) -> Kernel:
    """Kernel of ``net`` by spatial blocking (module docstring); ``rows`` fixes the number
    of output rows per band (default: from the budget)."""
    if x1.ndim <= 2:
        raise ValueError(f"spatial_blocking needs image inputs (N, C, *spatial), got `x1` of shape "
                         f"{tuple(x1.shape)}.")
    split = split_architecture(net)
    if isinstance(split, str):
        raise ValueError(f"spatial_blocking (needed when one pair of inputs does not fit "
                         f"`max_memory`) cannot handle this architecture: {split}.")
    chain, reducer, tail = split
    shape = tuple(x1.shape)
    steps = build_steps(chain, shape)
    from widelimit.layers.pool import GlobalAvgPool
    gap = isinstance(reducer, GlobalAvgPool)
    n_out = steps[-1].n_out if steps else shape[2:]
    symmetric = x2 is None
    xb = x1 if symmetric else x2
    n1, n2 = x1.shape[0], xb.shape[0]
    need = sorted({i for i, st in enumerate(steps) if st.kind == "point"}
                  | (set() if gap else {len(steps)}))
    all_out = list(range(n_out[0]))

    def square(r: list[int]) -> Band:
        return make_band(steps, r, r)

    def pair(r: list[int]) -> Band:
        return make_band(steps, r, all_out) if gap else square(r)

    item = x1.element_size()
    sizes = [st.n_in for st in steps] + [tuple(n_out)]
    var_bytes = (n1 + (0 if symmetric else n2)) * sum(math.prod(sizes[l]) for l in need) * item
    fixed = (2 * n1 * n2 + x1.numel() + (0 if symmetric else xb.numel())) * item + var_bytes
    h, b1, b2, workers = _plan(steps, shape, pair, gap, x1, xb,
                               resolve_budget(max_memory, x1.device), fixed, rows, symmetric)
    chunks = [all_out[a:a + h] for a in range(0, n_out[0], h)]
    maps1 = _var_maps(steps, x1, [square(r) for r in chunks], need, workers)
    maps2 = maps1 if symmetric else _var_maps(steps, xb, [square(r) for r in chunks], need, workers)
    pair_bands = [pair(r) for r in chunks]

    def totals(jobs: list, want_ntk: bool) -> list:
        """Sum over bands of (nngp, ntk) for each job (xa, xc, s1, s2, maps_a, maps_c); one
        thread per (job, band), summed in band order (the same result for any thread count)."""
        def one(task):
            (xa, xc, s1, s2, ma, mc), band = task
            k = run_band(steps, band, xa, xc, _map_var(ma, s1, mc, s2, band), want_ntk)
            return _reduce(k, gap) + ((k.shape1[1], k.is_gaussian, k.is_input),)
        tasks = [(job, band) for job in jobs for band in pair_bands]
        outs = parallel_map(one, tasks, x1.device, workers)
        sums = []
        for j in range(len(jobs)):
            part = outs[j * len(pair_bands):(j + 1) * len(pair_bands)]
            nngp, ntk = part[0][0], part[0][1]
            for a, b, _ in part[1:]:
                nngp = nngp + a
                ntk = ntk if b is None or b.ndim == 0 else ntk + b
            sums.append((nngp, ntk, part[-1][2]))
        return sums

    size = math.prod(n_out)
    scale = 1.0 / (size * size) if gap and reducer.average else (1.0 if gap else 1.0 / size)  # type: ignore[attr-defined]
    rows_b, cols_b = _slices(n1, b1), _slices(n2, b2)
    blocks = [(s1, s2) for i, s1 in enumerate(rows_b) for j, s2 in enumerate(cols_b)
              if not (symmetric and j < i)]
    results = totals([(x1[s1], xb[s2], s1, s2, maps1, maps2) for s1, s2 in blocks], True)
    nngp = x1.new_zeros((n1, n2))
    ntk: Tensor = nngp.clone()
    for (s1, s2), (a, b, meta) in zip(blocks, results):
        nngp[s1, s2] = a * scale
        if b.ndim == 0:
            ntk = b
        else:
            ntk[s1, s2] = b * scale
    if symmetric:     # blocks above the diagonal, mirrored: exactly symmetric
        nngp, ntk = mirror_lower(nngp, False), mirror_lower(ntk, False)

    def self_cov(x: Tensor, maps: dict) -> Tensor:
        if not gap:
            return maps[len(steps)].flatten(1).mean(1)
        if x is x1 and symmetric:
            return torch.diagonal(nngp).clone()
        one = [slice(i, i + 1) for i in range(x.shape[0])]
        return torch.cat([t[0].reshape(1) * scale
                          for t in totals([(x[s], x[s], s, s, maps, maps) for s in one], False)])

    cov1 = self_cov(x1, maps1)
    cov2 = None if symmetric else self_cov(xb, maps2)
    c_last, is_gaussian, is_input = meta
    width = c_last if gap else c_last * size
    k = Kernel(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, x1_is_x2=symmetric,
               is_gaussian=is_gaussian if gap else False, shape1=(n1, width),
               shape2=(n2, width), is_input=is_input if gap else False, diagonal_spatial=True)
    from widelimit.layers.combinators import Serial
    return Serial(*tail).apply_kernel(k) if tail else k
