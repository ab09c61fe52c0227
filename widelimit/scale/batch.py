"""``wl.batch``: a kernel function computed in blocks of input pairs.

In the style of neural-tangents' ``nt.batch``: ``batch(kernel_fn, block_size)`` returns a
function with the call signature of ``kernel_fn(x1, x2=None, get=..., **kw)`` that cuts the
(N1, N2) result into the blocks of :func:`widelimit.scale.grid.blocks`, calls
``kernel_fn(x1[rows], x2[cols], get=get, **kw)`` for each and writes the results into one
preallocated output.  For ``x2 = None`` only the blocks on and above the diagonal are
computed (``kernel_fn(x1[rows], None)`` on the diagonal, ``kernel_fn(x1[rows], x1[cols])``
above it) and the others are their transposes: half the work, and an exactly symmetric
result.  Every entry is computed by the same arithmetic as in the unblocked call, so the
result equals it bit for bit for every block size (tested for FC, CNN and empirical
kernels in float32 and float64).

Memory: the result, ``result_bytes = n_kernels * N1 * N2 * itemsize``, must fit
``max_memory`` (or the memory available now), else
:class:`~widelimit.scale.memory.KernelMemoryError` before anything is allocated.  One block
is estimated at ``LIVE_TENSORS * n_kernels * b^2 * itemsize`` (the intermediates of a
fully connected kernel); without ``block_size`` the largest ``b`` whose block fits the
rest of the budget is used (at most ``DEFAULT_BLOCK``).
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable, Optional

import numpy as np
import torch

from widelimit.scale.grid import blocks
from widelimit.scale.memory import (KernelMemoryError, check_result_fits, format_bytes,
                                    parse_memory)

__all__ = ["batch", "choose_block_size", "DEFAULT_BLOCK", "LIVE_TENSORS"]

#: block size without ``block_size`` and ``max_memory``
DEFAULT_BLOCK = 2048
#: live (b, b) intermediates per kernel assumed for one block (as scale.blocking)
LIVE_TENSORS = 10
_UNSET = object()


def _n(x: Any) -> int:
    return int(x.shape[0])


def _itemsize(x: Any) -> int:
    dt = x.dtype
    if isinstance(dt, torch.dtype):
        return torch.empty((), dtype=dt).element_size() if dt.is_floating_point else 4
    return max(np.dtype(dt).itemsize, 4) if np.dtype(dt).kind == "f" else 4


def _parts(res: Any) -> tuple[list, Optional[Callable]]:
    """A block's result as a list of matrices and how to rebuild its container."""
    if isinstance(res, (torch.Tensor, np.ndarray)):
        return [res], None
    if isinstance(res, tuple) and res and all(isinstance(r, (torch.Tensor, np.ndarray)) for r in res):
        make = type(res)._make if hasattr(type(res), "_fields") else tuple  # type: ignore[attr-defined]
        return list(res), make
    raise TypeError(f"`wl.batch` stitches matrices (a tensor, an ndarray or a namedtuple of "
                    f"them); the kernel function returned {type(res).__name__}.  Pass `get=` "
                    f"(e.g. get='ntk') so that it returns matrices.")


def _empty_like(part: Any, n1: int, n2: int):
    if isinstance(part, torch.Tensor):
        return torch.empty((n1, n2) + tuple(part.shape[2:]), dtype=part.dtype, device=part.device)
    return np.empty((n1, n2) + tuple(part.shape[2:]), dtype=part.dtype)


def _transpose(part: Any):
    if isinstance(part, torch.Tensor):
        return part.transpose(0, 1)
    return np.swapaxes(part, 0, 1)


def _block_size(block_size: Optional[int], budget: Optional[int], need: int, kernels: int,
                item: int, n: int) -> int:
    """The block size: ``block_size`` (checked against what the budget leaves after the
    result), or the largest that fits it."""
    per_entry = LIVE_TENSORS * kernels * item
    if budget is None:
        return block_size or min(n, DEFAULT_BLOCK) or 1
    free = budget - need
    if block_size is None:
        b = int(math.isqrt(max(free, 0) // per_entry))
        if b < 1:
            raise KernelMemoryError(
                f"`max_memory`={format_bytes(budget)} is smaller than one block: the result and "
                f"inputs need {format_bytes(need)} and a block of a single pair "
                f"{format_bytes(per_entry)} more; pass max_memory of at least "
                f"{format_bytes(need + per_entry)}, or write the result out of core with "
                f"`wl.compute_kernel(kernel_fn, x, out=\"K.zarr\")`.", need + per_entry, budget)
        return max(1, min(b, n, DEFAULT_BLOCK))
    one = per_entry * block_size ** 2
    if one > free:
        raise KernelMemoryError(
            f"`max_memory`={format_bytes(budget)} is smaller than one block: block_size="
            f"{block_size} needs about {format_bytes(one)} per block besides the result and "
            f"inputs ({format_bytes(need)}); pass a smaller block_size (at most "
            f"{max(int(math.isqrt(max(free, 0) // per_entry)), 0)}) or max_memory of at least "
            f"{format_bytes(need + one)}.", need + one, budget)
    return block_size


def choose_block_size(block_size: Optional[int], max_memory: Any, item: int, kernels: int,
                      n1: int, n2: int, in_bytes: int) -> int:
    """Check that the result fits (:class:`KernelMemoryError` otherwise) and return the
    block size: ``block_size`` if one block fits what the budget leaves, else the largest
    that does (module docstring)."""
    out_bytes = kernels * n1 * n2 * item
    check_result_fits(out_bytes, max_memory, (n1, n2))
    budget = None if max_memory is None else parse_memory(max_memory)
    return _block_size(block_size, budget, out_bytes + in_bytes, kernels, item, max(n1, n2, 1))


def _is_layer_kernel_fn(fn: Any) -> bool:
    """A bound ``Layer.kernel_fn``: blocked by the execution layer itself, which computes
    the input Gram matrix once so that blocks keep the unblocked arithmetic."""
    owner = getattr(fn, "__self__", None)
    return (owner is not None and getattr(fn, "__name__", "") == "kernel_fn"
            and hasattr(owner, "apply_kernel") and hasattr(owner, "walk"))


def batch(kernel_fn: Callable, block_size: Optional[int] = None, max_memory: Any = None,
          progress: bool = False) -> Callable:
    """``kernel_fn`` computed in blocks of at most ``block_size`` x ``block_size`` pairs.

    Args:
        kernel_fn: ``kernel_fn(x1, x2=None, get=..., **kw)`` returning a matrix or a
            namedtuple of matrices: ``Layer.kernel_fn`` or
            :func:`widelimit.empirical_kernel_fn` functions.
        block_size: rows / columns per block (need not divide N); None: the largest
            that fits ``max_memory`` (module docstring), else 2048.
        max_memory: budget in bytes or a string such as ``"4GB"``; the result must fit it
            (:class:`~widelimit.scale.memory.KernelMemoryError` otherwise, before
            allocating), and one block must fit what is left.
        progress: a tqdm progress bar (on stderr) counting kernel entries, with entries/s.

    Returns:
        A function with ``kernel_fn``'s call signature, whose result equals
        ``kernel_fn(x1, x2, get=get, **kw)`` bit for bit.
    """
    if not callable(kernel_fn):
        raise TypeError(f"`kernel_fn` must be callable, got {type(kernel_fn).__name__}.")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int)
                                   or block_size < 1):
        raise ValueError(f"`block_size` must be a positive integer or None, got {block_size!r}.")
    budget = None if max_memory is None else parse_memory(max_memory)
    if not isinstance(progress, bool):
        raise TypeError(f"`progress` must be True or False, got {progress!r}.")

    layer_fn = _is_layer_kernel_fn(kernel_fn)

    def batched(x1: Any, x2: Any = None, get: Any = _UNSET, **kw: Any):
        call_kw = dict(kw) if get is _UNSET else dict(kw, get=get)
        if get is None:
            raise ValueError("`wl.batch` stitches kernel matrices: pass `get=` ('nngp', 'ntk' "
                             "or a tuple of them), not None.")
        n1 = _n(x1)
        n2 = n1 if x2 is None else _n(x2)
        kernels = 2 if get is _UNSET else (1 if isinstance(get, str) else len(tuple(get)))
        item = _itemsize(x1)
        in_bytes = (x1.numel() if isinstance(x1, torch.Tensor) else np.size(x1)) * item
        if x2 is not None:
            in_bytes += (x2.numel() if isinstance(x2, torch.Tensor) else np.size(x2)) * item
        b = choose_block_size(block_size, max_memory, item, kernels, n1, n2, in_bytes)
        if layer_fn:
            return kernel_fn(x1, x2, block_size=b, progress=progress, **call_kw)
        symmetric = x2 is None
        grid = blocks(n1, n2, b, symmetric)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            total = sum((g.rows.stop - g.rows.start) * (g.cols.stop - g.cols.start) for g in grid)
            bar = tqdm(total=total, unit="entries", unit_scale=True, file=sys.stderr,
                       desc="wl.batch", leave=False)
        outs: Optional[list] = None
        make = None
        try:
            for g in grid:
                other = None if g.diagonal and symmetric else (x1 if symmetric else x2)[g.cols]
                parts, make = _parts(kernel_fn(x1[g.rows], other, **call_kw))
                if outs is None:
                    outs = [_empty_like(p, n1, n2) for p in parts]
                for out, p in zip(outs, parts):
                    out[g.rows, g.cols] = p
                    if symmetric and not g.diagonal:
                        out[g.cols, g.rows] = _transpose(p)
                if bar is not None:
                    bar.update((g.rows.stop - g.rows.start) * (g.cols.stop - g.cols.start))
        finally:
            if bar is not None:
                bar.close()
        if outs is None:      # no inputs
            return kernel_fn(x1, x2, **call_kw)
        return outs[0] if make is None else make(outs)

    batched.__wrapped__ = kernel_fn  # type: ignore[attr-defined]
    batched.__doc__ = f"wl.batch(block_size={block_size}) of {getattr(kernel_fn, '__qualname__', kernel_fn)}"
    return batched
