"""The grid of blocks an (N1, N2) kernel is cut into (shared by :func:`widelimit.batch`,
:func:`widelimit.compute_kernel` and the blocked solvers)."""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["Block", "blocks", "slices"]


class Block(NamedTuple):
    """Block ``(i, j)`` of the grid: rows ``rows`` of x1 against columns ``cols`` of x2."""
    i: int
    j: int
    rows: slice
    cols: slice

    @property
    def diagonal(self) -> bool:
        """A block on the diagonal of a kernel of x1 with itself (``i == j``, same slices)."""
        return self.i == self.j and self.rows == self.cols


def slices(n: int, block_size: int) -> list[slice]:
    """``[0, b), [b, 2b), ...`` covering ``range(n)``; the last one may be shorter."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"`block_size` must be a positive integer, got {block_size!r}.")
    if n < 0:
        raise ValueError(f"the number of inputs must be >= 0, got {n}.")
    return [slice(s, min(s + block_size, n)) for s in range(0, n, block_size)]


def blocks(n1: int, n2: int, block_size: int, symmetric: bool) -> list[Block]:
    """All blocks of an (n1, n2) grid of ``block_size`` rows and columns, row by row;
    with ``symmetric`` (a kernel of x1 with itself: ``n1 == n2``) only those with
    ``j >= i`` (on and above the diagonal)."""
    if symmetric and n1 != n2:
        raise ValueError(f"a symmetric grid needs n1 == n2, got {n1} and {n2}.")
    rows, cols = slices(n1, block_size), slices(n2, block_size)
    return [Block(i, j, r, c) for i, r in enumerate(rows) for j, c in enumerate(cols)
            if not (symmetric and j < i)]
