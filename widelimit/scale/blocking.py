"""Block planner: compute an (N1, N2) kernel in blocks of input pairs under a memory budget.

Convolutional kernels with full spatial covariances hold (b1, b2, H, H, W, W) tensors:
for 64 images of 32x32 that is 4 GiB per tensor in float32.  :func:`plan_blocks`
measures, on a single pair of inputs, the largest tensor any operation of the
architecture creates (M elements per pair) and the size of the result per pair, and
picks the largest blocks with

    LIVE_TENSORS * (b1 b2 + b1 + b2) * M * itemsize  +  result  <=  max_memory

(b1 b2 pair entries for nngp/ntk, b1 + b2 per-example entries for cov1/cov2).  The
kernel is then computed block by block with the same rules and written into the
result; for ``x2 = None`` only blocks on and above the diagonal are computed and the
others are mirrored.  Blocking never changes the arithmetic of an entry: the
unblocked result for ``x2 = None`` is mirrored the same way (entries below the
diagonal are copied from above it), so blocked and unblocked results are identical
bit for bit, and exactly symmetric.

Kernels of vector inputs need no probe (every intermediate is (N1, N2)) and are cut into
cache-sized tiles (:func:`vector_plan`); there only the input Gram matrix of a tile,
a smaller GEMM, may differ from the whole one in the last bit.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from widelimit.kernels import _native
from widelimit.kernels.state import Kernel
from widelimit.scale.memory import (DEFAULT_FRACTION, KernelMemoryError, format_bytes, MaxNumel, PeakBytes, available_memory,
                                    bytes_in_use, resolve_budget)
from widelimit.scale.threads import parallel_map

__all__ = ["LIVE_TENSORS", "DEFAULT_FRACTION", "available_memory", "resolve_budget", "bytes_in_use",
           "PeakBytes", "BudgetTooSmall", "Plan", "plan_blocks", "run_blocked", "vector_plan"]

#: assumed number of simultaneously live tensors of the largest size (nngp, ntk, variances,
#: and the temporaries of a nonlinearity's dual); calibrated with benchmarks/conv.py
LIVE_TENSORS = 10
#: for image kernels, blocks are also kept small enough that the largest tensor has about
#: this many elements (4 MiB in float32): below the mmap threshold that
#: :func:`widelimit.scale.memory.tune_malloc` sets, so intermediates reuse freed heap
#: instead of a page fault per 4 KiB, and large enough that the threads' per-operation
#: overhead stays small.  Measured (2 cores, float32; CNN+GAP 16x16 N=16 by
#: benchmarks/conv.py, CNN+Flatten 16x16 N=64): 0.49 / 0.29 / 0.28 s at 0.51 / 0.53 /
#: 0.66 GB peak and 41 / 29 / 26 ms for 2^19 / 2^20 / 2^21; 2^20 keeps most of the speed
#: at a fifth less memory.
CACHE_ELEMENTS = 2**20
#: image problems with at most this many (pair x position-pair) entries are computed in
#: one block: planning (a probe through the whole network) and threads cost more there
SMALL_PROBLEM = 2**18
#: kernels of vector inputs (fully connected networks) with at least this many entries are
#: computed in square tiles of at most VECTOR_TILE rows.  Every layer is a dozen
#: elementwise passes over the (N1, N2) matrices; over the whole matrix each pass streams
#: it from memory, over a tile the passes run in cache, and for ``x2 = None`` only tiles
#: on and above the diagonal are computed (half the work).  N = 4000, depth 3: 2x faster.
VECTOR_TILED_FROM = 2**19
VECTOR_TILE = 512


@dataclass(frozen=True)
class Plan:
    b1: int
    b2: int
    per_pair: int          # elements of the largest intermediate, per pair of inputs
    out_per_pair: int      # elements of the result, per pair of inputs
    budget: int


class BudgetTooSmall(KernelMemoryError):
    """``max_memory`` cannot hold the result, the inputs and one pair of inputs (raised by
    :func:`plan_blocks`; a :class:`~widelimit.scale.memory.KernelMemoryError`)."""


_fmt = format_bytes


def _result_numel(res) -> int:
    if isinstance(res, (list, tuple)):
        return sum(_result_numel(r) for r in res)
    return sum(t.numel() for t in (res.nngp, res.ntk) if t is not None)


Batch = Union[Tensor, tuple]


def _lead(x: Batch) -> Tensor:
    """The input tensor of a batch: a tensor, or a tuple (inputs, per-example extras...)."""
    return x[0] if isinstance(x, tuple) else x


def _take(x: Optional[Batch], rows: slice) -> Optional[Batch]:
    """Rows of a batch; every tensor of a tuple batch shares the leading batch axis
    (e.g. inputs and their masks), None entries stay None."""
    if x is None:
        return None
    if isinstance(x, tuple):
        return tuple(None if t is None else t[rows] for t in x)
    return x[rows]


#: probe results (largest intermediate and result entries per pair) per owner object
#: (the architecture) and input signature: a probe runs the architecture on one pair
#: under a dispatch mode, several milliseconds that repeated calls need not pay again
_PROBED: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _signature(x: Optional[Batch]) -> Optional[tuple]:
    if x is None:
        return None
    parts = x if isinstance(x, tuple) else (x,)
    return tuple(None if t is None else (tuple(t.shape[1:]), t.dtype, t.device.type) for t in parts)


def plan_blocks(compute: Callable, x1: Batch, x2: Optional[Batch], budget: int,
                cache_elements: Optional[int] = None, hint: Optional[str] = None,
                owner: Any = None, key: Any = None) -> Plan:
    """Choose block sizes (b1, b2) for ``compute(x1_block, x2_block_or_None)``.

    The blocks are the largest that fit ``budget`` (bytes) and, if given, keep the
    largest tensor near ``cache_elements`` elements.  ``hint`` is appended to the error
    raised when one pair does not fit.  With an ``owner`` (the architecture; ``key``: the
    options that change its computation) the probe's measurements are kept for the next
    call with inputs of the same shape per example, dtype and device.
    """
    t1, t2 = _lead(x1), None if x2 is None else _lead(x2)
    n1 = t1.shape[0]
    n2 = n1 if t2 is None else t2.shape[0]
    item = t1.element_size()
    memo = (key, _signature(x1), _signature(x2))
    try:
        seen = _PROBED.get(owner, {}) if owner is not None else {}
    except TypeError:        # an unhashable owner: no memo
        owner, seen = None, {}
    if memo in seen:
        per_pair, out_per_pair = seen[memo]
    else:
        probe = MaxNumel()
        with torch.no_grad(), probe:
            res = compute(_take(x1, slice(0, 1)), _take(x2, slice(0, 1)))
        per_pair = max(probe.max_numel, 1)
        out_per_pair = max(_result_numel(res), 1)
        if owner is not None:
            _PROBED.setdefault(owner, {})[memo] = (per_pair, out_per_pair)
    out_bytes = n1 * n2 * out_per_pair * item
    in_bytes = (t1.numel() + (0 if t2 is None else t2.numel())) * item
    free = budget - out_bytes - in_bytes
    unit = LIVE_TENSORS * per_pair * item          # bytes per (b1 b2 + b1 + b2) entry
    cap = free / unit
    mem_cap = cap
    if cache_elements:
        cap = min(cap, max(3.0, cache_elements / per_pair))
    if mem_cap < 3:
        need = out_bytes + in_bytes + 3 * unit
        raise BudgetTooSmall(
            f"`max_memory`={_fmt(budget)} is too small for this call: it needs at least "
            f"{_fmt(need)} = the result {_fmt(out_bytes)} + the inputs {_fmt(in_bytes)} + one "
            f"block of a single pair of inputs {_fmt(3 * unit)} (largest intermediate: "
            f"{per_pair} elements per pair); pass max_memory of at least {_fmt(need)}, or "
            f"compute the result out of core with `wl.compute_kernel(kernel_fn, x, out=\"K.zarr\")`."
            + (hint or ""), needed=int(need), budget=budget)
    if x2 is None:   # square blocks so that mirrored blocks line up
        b = int((math.sqrt(1 + cap) - 1))
        b1 = b2 = max(1, min(n1, b))
    else:
        b1 = max(1, min(n1, int(math.sqrt(cap + 1) - 1)))
        b2 = max(1, min(n2, int((cap - b1) / (b1 + 1))))
        if b2 == n2:                                   # give the slack back to b1
            b1 = max(1, min(n1, int((cap - b2) / (b2 + 1))))
    return Plan(b1, b2, per_pair, out_per_pair, budget)


def vector_plan(n1: int, n2: Optional[int], threads: int) -> Plan:
    """Tiles for a kernel of vector inputs (see ``VECTOR_TILE``); ``n2 = None`` for x2 = None.

    The grid is ``g`` or ``g + 1`` tiles per side (``g = ceil(n / VECTOR_TILE)``),
    whichever keeps the threads busier: the critical path is ceil(tiles / threads)
    tiles of side n / g.
    """
    m = n1 if n2 is None else n2
    if n1 * m < VECTOR_TILED_FROM:
        return Plan(n1, m, 1, 1, 0)

    def grid(n: int) -> int:
        g0 = -(-n // VECTOR_TILE)
        if n2 is not None:
            return g0
        cost = {g: -(-(g * (g + 1) // 2) // threads) / g ** 2 for g in (g0, g0 + 1)}
        return min(cost, key=cost.get)

    b1 = -(-n1 // grid(n1))
    b2 = b1 if n2 is None else -(-n2 // grid(n2))
    return Plan(b1, b2, 1, 1, 0)


def _swap_pairs(mat: Tensor, full_spatial: bool) -> Tensor:
    """Kernel of (x2, x1) from that of (x1, x2): swap batch axes and each position pair."""
    if mat.ndim == 0:
        return mat
    perm = [1, 0]
    rest = list(range(2, mat.ndim))
    if full_spatial:
        for i in range(0, len(rest), 2):
            perm += [rest[i + 1], rest[i]]
    else:
        perm += rest
    return mat.permute(perm)


def mirror_lower(mat: Optional[Tensor], full_spatial: bool) -> Optional[Tensor]:
    """Copy the entries above the batch diagonal of an (N, N, ...) kernel below it."""
    if mat is None or mat.ndim < 2:
        return mat
    if mat.ndim == 2 and _native.applies(mat):
        return _native.mirror_upper(mat)
    n = mat.shape[0]
    lower = torch.ones(n, n, dtype=torch.bool, device=mat.device).tril_(-1)
    lower = lower.reshape((n, n) + (1,) * (mat.ndim - 2))
    return torch.where(lower, _swap_pairs(mat, full_spatial), mat)


def _mirror_kernel(k, flagged_only: bool = False):
    """Mirror a kernel of x1 with itself; with ``flagged_only`` only one whose ``upper``
    flag says its lower triangle is missing (rules that complete it clear the flag)."""
    if isinstance(k, (list, tuple)):
        return [_mirror_kernel(ki, flagged_only) for ki in k]
    if flagged_only and not k.upper:
        return k
    full = k.n_spatial > 0 and not k.diagonal_spatial
    return k.replace(nngp=mirror_lower(k.nngp, full), ntk=mirror_lower(k.ntk, full), upper=False)


def _assemble(blocks: dict, rows: list, cols: list, symmetric: bool):
    """Stitch a dict {(i, j): Kernel} of blocks into one Kernel."""
    first = blocks[(0, 0)]
    n1 = rows[-1].stop
    n2 = cols[-1].stop
    full = first.n_spatial > 0 and not first.diagonal_spatial

    def stitch(name: str) -> Optional[Tensor]:
        t0 = getattr(first, name)
        if t0 is None or t0.ndim == 0:
            return t0
        out = t0.new_empty((n1, n2) + tuple(t0.shape[2:]))
        for (i, j), k in blocks.items():
            t = getattr(k, name)
            out[rows[i], cols[j]] = t
            if symmetric and i != j:
                out[cols[j], rows[i]] = _swap_pairs(t, full)
        return out

    row_blocks = [blocks[(i, i if symmetric else 0)] for i in range(len(rows))]
    cov1 = torch.cat([k.cov1 for k in row_blocks])
    mask1 = _cat_masks([k.mask1 for k in row_blocks])
    cov2 = mask2 = None
    if not symmetric:
        col_blocks = [blocks[(0, j)] for j in range(len(cols))]
        cov2 = torch.cat([k.cov2 if k.cov2 is not None else k.cov1 for k in col_blocks])
        mask2 = _cat_masks([k.mask1 if k.x1_is_x2 else k.mask2 for k in col_blocks])
    return first.replace(nngp=stitch("nngp"), ntk=stitch("ntk"), cov1=cov1, cov2=cov2,
                         mask1=mask1, mask2=mask2,
                         shape1=(n1,) + tuple(first.shape1[1:]),
                         shape2=(n2,) + tuple(first.shape2[1:]))


def _cat_masks(masks: list) -> Optional[Tensor]:
    """Concatenate the per-block masks of one side (None if no block has one)."""
    if all(m is None for m in masks):
        return None
    return torch.cat(masks)


def _slices(n: int, b: int) -> list:
    return [slice(i, min(i + b, n)) for i in range(0, n, b)]


def run_blocked(compute: Callable, x1: Batch, x2: Optional[Batch], max_memory: Any = None,
                probe: bool = True, hint: Optional[str] = None, owner: Any = None, key: Any = None):
    """``compute(x1, x2)`` (returning a Kernel or list of Kernels) in blocks of pairs.

    ``x1`` / ``x2`` are tensors, or tuples of tensors (or None) sharing the batch axis
    (inputs and their masks), split into the same blocks.  With ``probe=False`` (small
    image problems, and vector inputs without an explicit budget) nothing is measured:
    images are one block, vectors are tiled (:func:`vector_plan`).
    """
    batch1, batch2 = x1, x2
    x1, x2 = _lead(batch1), None if batch2 is None else _lead(batch2)
    tiles = None
    if x1.ndim == 2:
        tiles = vector_plan(x1.shape[0], None if x2 is None else x2.shape[0], torch.get_num_threads())
    if probe:
        plan = plan_blocks(compute, batch1, batch2, resolve_budget(max_memory, x1.device),
                           CACHE_ELEMENTS if x1.ndim > 2 else None, hint, owner, key)
        if tiles is not None:
            plan = Plan(min(plan.b1, tiles.b1), min(plan.b2, tiles.b2), plan.per_pair,
                        plan.out_per_pair, plan.budget)
    else:
        plan = tiles or Plan(x1.shape[0], x1.shape[0] if x2 is None else x2.shape[0], 1, 1, 0)
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]

    def one(rows: slice, cols: slice, diagonal: bool):
        if diagonal:
            return compute(_take(batch1, rows), None)
        return compute(_take(batch1, rows), _take(batch1 if x2 is None else batch2, cols))
    return _run_pairs(one, n1, n2, plan, x2 is None, x1.device)


def kernel_tile(k0: Kernel, rows: slice, cols: slice, diagonal: bool, upper: bool = False) -> Kernel:
    """The part of a vector-input kernel state ``k0`` between inputs ``rows`` of x1 and
    ``cols`` of x2.  ``diagonal``: a block on the diagonal of a kernel of x1 with itself,
    whose ``nngp`` / ``ntk`` need only be right on and above the diagonal (BLAS ``syrk``
    output); it is mirrored, or with ``upper`` flagged as such (``Kernel.upper``)."""
    def part(t: Optional[Tensor]) -> Optional[Tensor]:
        if t is None or t.ndim == 0:
            return t
        t = t[rows, cols]
        return mirror_lower(t, False) if diagonal and not upper else t
    cov2 = k0.cov1 if k0.cov2 is None else k0.cov2
    d = k0.shape1[1:]
    return k0.replace(nngp=part(k0.nngp), ntk=part(k0.ntk), cov1=k0.cov1[rows],
                      cov2=None if diagonal else cov2[cols], x1_is_x2=diagonal,
                      upper=diagonal and upper,
                      shape1=(rows.stop - rows.start,) + d, shape2=(cols.stop - cols.start,) + d)


def run_tiles(compute: Callable, k0: Kernel, whole: bool = False, handover: bool = False,
              block_size: Optional[int] = None, on_block: Optional[Callable] = None):
    """``compute(k)`` for a kernel state ``k0`` of vector inputs (no spatial axes), in the
    cache-sized tiles of :func:`vector_plan`: the elementwise rules of every layer run
    over one tile while it is in cache, the tiles on the thread pool.  With
    ``k0.x1_is_x2`` only tiles on and above the diagonal are computed, and ``k0.nngp``
    need only be right there (see :func:`kernel_tile`).  ``whole``: one tile, for rules
    that make one pass per layer anyway (native loops, which split their rows over the
    threads themselves); with ``handover`` its buffers may then be overwritten
    (``Kernel.scratch``: only for a ``compute`` that clears the flag, i.e. ``Serial``).
    ``block_size``: tiles of that many rows and columns instead (``wl.batch``), with
    ``on_block(rows, cols)`` called after each."""
    n1, n2 = k0.nngp.shape[:2]
    symmetric = k0.x1_is_x2
    if block_size is not None:
        plan = Plan(block_size, block_size, 1, 1, 0)
        if plan.b1 >= n1 and plan.b2 >= n2 and on_block is not None:
            on_block(slice(0, n1), slice(0, n2))

        def tile(rows: slice, cols: slice, diagonal: bool):
            return compute(kernel_tile(k0, rows, cols, diagonal))
        return _run_pairs(tile, n1, n2, plan, symmetric, k0.nngp.device, on_block)
    if whole:
        every1, every2 = slice(0, n1), slice(0, n2)
        k = compute(kernel_tile(k0, every1, every2, symmetric, upper=True).replace(scratch=handover))
        return _mirror_kernel(k, flagged_only=True) if symmetric else k
    plan = vector_plan(n1, None if symmetric else n2, torch.get_num_threads())

    def one(rows: slice, cols: slice, diagonal: bool):
        return compute(kernel_tile(k0, rows, cols, diagonal))
    return _run_pairs(one, n1, n2, plan, symmetric, k0.nngp.device)


def _run_pairs(one: Callable, n1: int, n2: int, plan: Plan, symmetric: bool, device,
               on_block: Optional[Callable] = None):
    """``one(rows, cols, diagonal)`` over the blocks of ``plan``, stitched into one Kernel
    (or list of Kernels); with ``symmetric`` only the blocks on and above the diagonal,
    and the diagonal ones are mirrored (a GEMM x @ x.T is not symmetric bit for bit).
    ``on_block(rows, cols)`` is called after each block (progress bars)."""
    if plan.b1 >= n1 and plan.b2 >= n2:
        whole1, whole2 = slice(0, n1), slice(0, n2)
        return _mirror_kernel(one(whole1, whole1, True)) if symmetric else one(whole1, whole2, False)
    rows, cols = _slices(n1, plan.b1), _slices(n2, plan.b2)
    todo = [(i, j) for i in range(len(rows)) for j in range(len(cols)) if not (symmetric and j < i)]

    def block(key):
        i, j = key
        if symmetric and i == j:
            res = _mirror_kernel(one(rows[i], rows[i], True))
        else:
            res = one(rows[i], cols[j], False)
        if on_block is not None:
            on_block(rows[i], cols[j])
        return res

    results = dict(zip(todo, parallel_map(block, todo, device)))
    first = results[(0, 0)]
    if isinstance(first, (list, tuple)):
        return [_assemble({key: v[m] for key, v in results.items()}, rows, cols, symmetric)
                for m in range(len(first))]
    return _assemble(results, rows, cols, symmetric)
