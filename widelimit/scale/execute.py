"""The execution layer: the one place that decides *how* a kernel computation runs.

Layers only describe rules (``Layer.apply_kernel``: a pure function from the input
:class:`~widelimit.kernels.state.Kernel` to the output one).  :func:`run` receives that
function, the inputs and the options, and picks the strategy:

1. *Result check.*  The (N1, N2) result must fit ``max_memory`` (or, when None, the memory
   available now); otherwise :class:`~widelimit.scale.memory.KernelMemoryError` is raised
   before anything is allocated, naming what to call instead.
2. *Explicit blocks.*  ``block_size`` / ``progress``: :func:`widelimit.scale.batch.batch`
   over blocks of input pairs (upper triangle only for ``x2 = None``).
3. *Bands of positions* (:mod:`widelimit.scale.spatial`) for image kernels with full
   spatial covariances whose single pair does not fit the budget (or when forced).
4. *Vector tiles* (:func:`widelimit.scale.blocking.run_tiles`): fully connected kernels
   without a budget, the input Gram matrix once (BLAS ``syrk`` for ``x2 = None``), then the
   rules tile by tile in cache, or in one pass where every rule is a native loop.
5. *Blocks of pairs* (:func:`widelimit.scale.blocking.run_blocked`) under the budget,
   probed on one pair; small problems in one block on one thread.

This module imports no ``widelimit.layers`` module at import time: the architecture is
passed in (``arch``, the owner of the rules) and only its methods are called.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

from widelimit.kernels import _native
from widelimit.kernels.masking import remask
from widelimit.kernels.state import inputs_to_kernel
from widelimit.scale.memory import check_result_fits

__all__ = ["run", "result_bytes"]

KERNEL_NAMES = ("nngp", "ntk")


def result_bytes(n1: int, n2: int, names: Optional[tuple], itemsize: int) -> int:
    """Bytes of the (N1, N2) result: one matrix per requested kernel (both for ``get=None``)."""
    return n1 * n2 * (len(KERNEL_NAMES) if names is None else len(names)) * itemsize


def run(fn: Callable, x1: Any, x2: Any = None, *, get: Any = None, max_memory: Any = None,
        block_size: Optional[int] = None, progress: bool = False, arch: Any = None,
        diagonal_spatial: Optional[bool] = None, mask_constant: Optional[float] = None,
        mask: Any = None, spatial_blocking: Union[None, bool, int] = None):
    """Run the kernel rules ``fn`` (``Kernel -> Kernel``, e.g. ``layer.apply_kernel``) on
    ``x1``, ``x2``, choosing the strategy (module docstring).

    ``arch`` is the architecture owning the rules (default: ``fn.__self__``); it answers
    ``walk()``, ``requires_full_spatial()``, ``input_channel_axis()`` and the like.  The
    other options are those of :meth:`widelimit.layers.base.Layer.kernel_fn`.
    """
    from widelimit.layers.base import canonical_get, prepare_masked_inputs, select
    from widelimit.scale import spatial
    from widelimit.scale.memory import tune_malloc
    if arch is None:
        arch = getattr(fn, "__self__", None)
        if arch is None:
            raise TypeError("`run` needs the architecture owning the rules: pass `arch=`.")
    names = canonical_get(get)
    blocked = block_size is not None or progress
    if blocked and (x1 is None or getattr(x1, "ndim", 0) != 2 or mask is not None
                    or mask_constant is not None):
        # images / masked inputs: blocks of input pairs, each computed as usual
        return _batched(fn, x1, x2, get, max_memory, block_size, progress, arch,
                        diagonal_spatial=diagonal_spatial, mask_constant=mask_constant,
                        mask=mask, spatial_blocking=spatial_blocking)
    tune_malloc()
    t1, t2, m1, m2, was_numpy = prepare_masked_inputs(x1, x2, mask, mask_constant,
                                                      arch.input_channel_axis())
    n1 = t1.shape[0]
    n2 = n1 if t2 is None else t2.shape[0]
    check_result_fits(result_bytes(n1, n2, names, t1.element_size()), max_memory, (n1, n2),
                      t1.device)
    spatial_blocking = spatial.check_option(spatial_blocking)
    if spatial_blocking not in (None, False) and diagonal_spatial:
        raise ValueError("`spatial_blocking` computes full spatial covariances in bands; it "
                         "cannot be combined with diagonal_spatial=True.")
    masked = m1 is not None or m2 is not None
    if spatial_blocking not in (None, False) and (mask is not None or mask_constant is not None):
        raise ValueError("`spatial_blocking` does not support masked inputs (`mask` / "
                         "`mask_constant`); pass spatial_blocking=None or False.")
    if diagonal_spatial is None:
        diagonal_spatial = not arch.requires_full_spatial()
    elif diagonal_spatial and arch.requires_full_spatial():
        needing = next(layer for layer in arch.walk() if layer.needs_full_spatial)
        raise ValueError(f"diagonal_spatial=True is impossible for this architecture: {needing!r} "
                         f"needs full spatial covariances (covariances between positions).")
    if blocked:
        k = _vector_blocks(fn, t1, t2, names, block_size, progress, max_memory)
    else:
        k = _strategy(fn, arch, t1, t2, m1, m2, names, max_memory, diagonal_spatial,
                      spatial_blocking, masked)
    from widelimit._tensors import to_output
    from widelimit._validate import warn_if_kernel_not_finite
    warn_if_kernel_not_finite(k)
    if isinstance(k, (list, tuple)):
        out = [select(ki, get) for ki in k]
        return to_output(out, was_numpy) if get is not None else out
    return to_output(select(k, get), was_numpy) if get is not None else k


def _batched(fn, x1, x2, get, max_memory, block_size, progress, arch, **options):
    """:func:`widelimit.scale.batch.batch` over blocks of input pairs, each block computed
    by :func:`run` (which picks the strategy for it)."""
    from widelimit.scale.batch import batch
    if options.get("mask") is not None:
        raise ValueError("`block_size` / `progress` do not support `mask`; pass "
                         "`mask_constant` or compute without blocks.")

    def inner(a, b=None, get=get):
        return run(fn, a, b, get=get, max_memory=max_memory, arch=arch, **options)
    return batch(inner, block_size=block_size, max_memory=max_memory,
                 progress=progress)(x1, x2, get=get)


def _vector_blocks(fn, t1, t2, names, block_size, progress, max_memory):
    """Kernels of vector inputs in tiles of ``block_size`` (``wl.batch``): the input Gram
    matrix once for all blocks, as the unblocked call computes it, then the rules tile by
    tile -- so every entry has the arithmetic of the unblocked call, bit for bit."""
    import sys

    from widelimit.scale.batch import choose_block_size
    from widelimit.scale.blocking import run_tiles
    n1 = t1.shape[0]
    n2 = n1 if t2 is None else t2.shape[0]
    kernels = 2 if names is None else len(names)
    b = choose_block_size(block_size, max_memory, t1.element_size(), kernels, n1, n2,
                          (t1.numel() + (0 if t2 is None else t2.numel())) * t1.element_size())
    k0 = inputs_to_kernel(t1, t2, upper_only=True, compute_ntk=names is None or "ntk" in names)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        total = n1 * (n1 + b) // 2 if t2 is None else n1 * n2   # about: upper triangle
        bar = tqdm(total=total, unit="entries", unit_scale=True, file=sys.stderr,
                   desc="kernel", leave=False)
    try:
        return run_tiles(fn, k0, block_size=b, on_block=None if bar is None else (
            lambda r, c: bar.update((r.stop - r.start) * (c.stop - c.start))))
    finally:
        if bar is not None:
            bar.close()


def _strategy(fn, arch, t1, t2, m1, m2, names, max_memory, diagonal_spatial, spatial_blocking,
              masked):
    """Steps 3-5 of the module docstring on prepared inputs; returns the Kernel state(s)."""
    from widelimit.scale import spatial
    from widelimit.scale.blocking import SMALL_PROBLEM, BudgetTooSmall, run_blocked, run_tiles
    from widelimit.scale.threads import single_thread
    factors_only = not diagonal_spatial and arch._factors_only()

    def compute(a, b):
        (a, ma), (b, mb) = a, (None, None) if b is None else b
        k = fn(inputs_to_kernel(
            a, b, diagonal_spatial=diagonal_spatial, mask1=ma, mask2=mb,
            factors_only=factors_only and ma is None and mb is None))
        return [remask(ki) for ki in k] if isinstance(k, (list, tuple)) else remask(k)

    k = None
    if (not diagonal_spatial or spatial_blocking) and not masked:
        k = spatial.maybe_spatial_kernel(arch, t1, t2, max_memory, spatial_blocking)
    if k is None and t1.ndim == 2 and not masked and max_memory is None:
        # vectors: the input kernel once (BLAS syrk for x2 = None), then every layer's
        # rules tile by tile (scale.blocking.run_tiles)
        small = t1.shape[0] * (t1.shape[0] if t2 is None else t2.shape[0]) <= SMALL_PROBLEM
        k0 = inputs_to_kernel(t1, t2, upper_only=True, compute_ntk=names is None or "ntk" in names)
        with single_thread(small):
            k = run_tiles(fn, k0,
                          whole=_native.applies(k0.nngp) and all(layer.has_native_rule()
                                                                 for layer in arch.walk()),
                          handover=arch.clears_scratch)
    if k is None:
        n2 = t1.shape[0] if t2 is None else t2.shape[0]
        # small problems run in one block on one thread, without the planner's probe
        per_pair = math.prod(t1.shape[2:]) ** (1 if diagonal_spatial else 2)
        small = t1.shape[0] * n2 * per_pair <= SMALL_PROBLEM
        hint = None
        if t1.ndim > 2:
            hint = (" Spatial blocking (bands of positions) does not support masked inputs."
                    if masked else spatial.budget_hint(arch))
        try:
            with single_thread(small and max_memory is None):
                k = run_blocked(compute, (t1, m1), None if t2 is None else (t2, m2),
                                max_memory, hint=hint,
                                probe=(t1.ndim > 2 and not small) or max_memory is not None,
                                owner=arch, key=(diagonal_spatial, names))
        except BudgetTooSmall:
            # the measured pair is larger than the geometry's estimate (e.g. quadrature
            # nonlinearities): bands of positions, where the architecture allows them
            if (spatial_blocking is not None or masked or t1.ndim <= 2
                    or not spatial.supports(arch)):
                raise
            k = spatial.spatial_kernel(arch, t1, t2, max_memory)
    return k
