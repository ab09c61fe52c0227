"""Output-axis bookkeeping: ``trace_axes`` and ``diagonal_axes`` as in neural-tangents.

For a model with per-example output shape ``out = (X, Y, Z, ...)`` the full kernel is
``K[i, j, x, x', y, y', ...] = sum_p J_i[x, y, ..., p] J_j[x', y', ..., p]`` (laid out
with the two copies of each output axis next to each other, i.e. neural-tangents'
"zipped" layout; with a single output axis this is simply ``(N1, N2, O, O)``).

* an axis in ``trace_axes`` is contracted (``x = x'`` summed) and the kernel is divided by
  the product of the traced sizes, so the result is a *mean* over those axes;
* an axis in ``diagonal_axes`` keeps only ``x = x'`` and appears once;
* every other axis appears twice.
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from widelimit._tensors import gram

__all__ = ["OutAxes"]


def _canon(axes: Sequence[int] | int, ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(axes, int) and not isinstance(axes, bool):
        axes = (axes,)
    try:
        axes = tuple(axes)
    except TypeError:
        raise TypeError(f"`{name}` must be a tuple of ints, got {axes!r}.") from None
    out = []
    for a in axes:
        if not isinstance(a, int) or isinstance(a, bool):
            raise TypeError(f"`{name}` must be a tuple of ints, got {axes!r}.")
        if not -ndim <= a < ndim:
            raise ValueError(f"`{name}` entry {a} is out of range for a per-example output with "
                             f"{ndim} axes (valid: {-ndim}..{ndim - 1}).")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"`{name}` contains the same axis twice: {axes!r}.")
    return tuple(sorted(out))


@dataclass(frozen=True)
class OutAxes:
    """Einsum subscripts for the output axes of one kernel layout.

    ``s1``/``s2`` label the output axes of the first/second Jacobian, ``res`` the result's
    output axes; letters are upper case so callers can use lower case for everything else.
    """
    out_shape: tuple[int, ...]
    trace: tuple[int, ...]
    diag: tuple[int, ...]

    @classmethod
    def make(cls, out_shape: Sequence[int], trace_axes, diagonal_axes) -> "OutAxes":
        out_shape = tuple(int(s) for s in out_shape)
        nd = len(out_shape)
        if nd == 0:  # scalar output per example: nothing to trace or diagonalise
            return cls(out_shape, (), ())
        trace = _canon(trace_axes, nd, "trace_axes")
        diag = _canon(diagonal_axes, nd, "diagonal_axes")
        both = set(trace) & set(diag)
        if both:
            raise ValueError(f"axes {sorted(both)} are in both `trace_axes` and `diagonal_axes`.")
        return cls(out_shape, trace, diag)

    @property
    def _letters(self) -> tuple[str, str]:
        n = len(self.out_shape)
        up = string.ascii_uppercase
        return up[:n], up[n:2 * n]

    @property
    def s1(self) -> str:
        return self._letters[0]

    @property
    def s2(self) -> str:
        a, b = self._letters
        return "".join(a[k] if (k in self.trace or k in self.diag) else b[k]
                       for k in range(len(self.out_shape)))

    @property
    def res(self) -> str:
        a, b = self._letters
        out = ""
        for k in range(len(self.out_shape)):
            if k in self.trace:
                continue
            out += a[k] if k in self.diag else a[k] + b[k]
        return out

    @property
    def res_shape(self) -> tuple[int, ...]:
        out: list[int] = []
        for k, s in enumerate(self.out_shape):
            if k in self.trace:
                continue
            out += [s] if k in self.diag else [s, s]
        return tuple(out)

    @property
    def trace_size(self) -> int:
        return math.prod(self.out_shape[k] for k in self.trace)

    @property
    def out_size(self) -> int:
        return math.prod(self.out_shape)

    @property
    def pairs(self) -> int:
        """Number of output pairs (x, x') the kernel sums or keeps, per pair of examples."""
        return math.prod(s if (k in self.trace or k in self.diag) else s * s
                         for k, s in enumerate(self.out_shape))

    def contract(self, j1: Tensor, j2: Tensor, symmetric: bool = False) -> Tensor:
        """``sum_f j1[i, out.., f] j2[j, out.., f]`` with the axis pattern (no division).

        ``j1``: (N1, *out, F), ``j2``: (N2, *out, F)  ->  (N1, N2, *res_shape);
        ``symmetric``: ``j2`` is ``j1`` (half the GEMM, see :func:`widelimit._tensors.gram`).
        """
        if not self.trace and not self.diag:  # plain GEMM: fastest path
            n1, n2 = j1.shape[0], j2.shape[0]
            a = j1.reshape(n1 * self.out_size, -1)
            b = j2.reshape(n2 * self.out_size, -1)
            k = gram(a, b, symmetric).reshape(n1, *self.out_shape, n2, *self.out_shape)
            return self.from_blocked(k)
        if not self.diag and len(self.trace) == len(self.out_shape):  # all traced: GEMM
            n1, n2 = j1.shape[0], j2.shape[0]
            return gram(j1.reshape(n1, -1), j2.reshape(n2, -1), symmetric)
        return torch.einsum(f"i{self.s1}z,j{self.s2}z->ij{self.res}", j1, j2)

    def reduce_full(self, k: Tensor) -> Tensor:
        """Full zipped kernel (N1, N2, x, x', y, y', ...) -> (N1, N2, *res) (no division)."""
        a, s2 = self._letters[0], self.s2
        sub = "".join(a[i] + s2[i] for i in range(len(self.out_shape)))
        return torch.einsum(f"ij{sub}->ij{self.res}", k)

    def from_blocked(self, k: Tensor) -> Tensor:
        """(N1, *out, N2, *out) (untraced, undiagonalised) -> (N1, N2, *res) zipped layout."""
        nd = len(self.out_shape)
        perm = [0, nd + 1]
        for a in range(nd):
            perm += [1 + a, nd + 2 + a]
        return k.permute(perm)

    def transpose(self, k: Tensor) -> Tensor:
        """K(x2, x1) from K(x1, x2): swap the example axes and each pair of output axes."""
        perm = [1, 0]
        pos = 2
        for ax in range(len(self.out_shape)):
            if ax in self.trace:
                continue
            if ax in self.diag:
                perm.append(pos)
                pos += 1
            else:
                perm += [pos + 1, pos]
                pos += 2
        return k.permute(perm)
