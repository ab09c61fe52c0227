"""Block-wise evaluation of a kernel over (N1, N2) with the symmetric case computed once."""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from widelimit.empirical._axes import OutAxes

__all__ = ["BlockImpl", "blocked_kernel", "check_block_size"]


class BlockImpl(Protocol):
    """An implementation split into per-block features and a pairwise contraction."""

    def prepare(self, x: Tensor) -> Any: ...

    def pair(self, f1: Any, f2: Any) -> Tensor: ...


def check_block_size(block_size: Any) -> int | None:
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"`block_size` must be a positive int or None, got {block_size!r}.")
    if block_size < 1:
        raise ValueError(f"`block_size` must be >= 1, got {block_size}.")
    return block_size


def blocked_kernel(impl: BlockImpl, x1: Tensor, x2: Tensor | None, axes: OutAxes,
                   block_size: int | None) -> Tensor:
    """Evaluate ``impl.pair`` on all blocks of (x1, x2); ``x2=None`` means x2 = x1.

    In the symmetric case only blocks with j >= i are computed; the others are their
    transposes. Returns the un-normalised kernel (N1, N2, *axes.res_shape).
    """
    sym = x2 is None
    xb = x1 if sym else x2
    n1, n2 = x1.shape[0], xb.shape[0]
    bs1 = min(block_size or n1, n1)
    bs2 = min(block_size or n2, n2)
    if bs1 >= n1 and bs2 >= n2:
        f1 = impl.prepare(x1)
        return impl.pair(f1, f1 if sym else impl.prepare(xb))
    out: Tensor | None = None
    for i in range(0, n1, bs1):
        f1 = impl.prepare(x1[i:i + bs1])
        for j in range(i if sym else 0, n2, bs2):
            f2 = f1 if (sym and j == i) else impl.prepare(xb[j:j + bs2])
            k = impl.pair(f1, f2)
            if out is None:
                out = torch.empty((n1, n2, *k.shape[2:]), dtype=k.dtype, device=k.device)
            out[i:i + bs1, j:j + bs2] = k
            if sym and j != i:
                out[j:j + bs2, i:i + bs1] = axes.transpose(k)
    if out is None:  # unreachable: x1 has at least one example
        raise RuntimeError("no blocks were computed")
    return out
