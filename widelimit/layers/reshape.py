"""Flatten and Index / Slice layers."""
from __future__ import annotations

from torch import Tensor, nn

from widelimit.kernels.rules.pool import flatten_rule
from widelimit.kernels.masking import all_masked, map_masks
from widelimit.layers.masking import ZeroMaskedInput
from widelimit.kernels.state import Kernel
from widelimit.layers.base import Layer

__all__ = ["Flatten", "FlattenModule", "Index", "IndexModule", "Slice"]


class FlattenModule(ZeroMaskedInput, nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)

    def mask_fn(self, mask: Tensor) -> Tensor:
        return all_masked(mask)


class Flatten(Layer):
    """Flatten all non-batch axes: (N, C, *S) -> (N, C prod(S)).

    Kernel: the mean of same-position covariances (what a following Dense layer
    sees, neural-tangents' ``Flatten``). It works in the cheap diagonal-spatial
    layout, so ``conv + relu + Flatten`` never builds pairs of positions.
    """

    def apply_kernel(self, k: Kernel) -> Kernel:
        return flatten_rule(k)

    def build(self) -> nn.Module:
        return FlattenModule()

    def __repr__(self) -> str:
        return "Flatten()"


def _index_kernel(k: Kernel, idx: tuple) -> Kernel:
    """Index the spatial axes of every covariance (both axes of each pair when full)."""
    sp_idx = idx[2:]
    sp_idx = sp_idx + (slice(None),) * (k.n_spatial - len(sp_idx))

    def fn(mat, batch_ndim: int):
        sel = [slice(None)] * batch_ndim
        for i in sp_idx:
            sel += [i] if k.diagonal_spatial else [i, i]
        return mat[tuple(sel)]

    def shape(sh: tuple) -> tuple:
        out = list(sh[:2])
        if idx[1] != slice(None):
            out[1] = len(range(sh[1])[idx[1]])
        for n, i in zip(sh[2:], sp_idx):
            if isinstance(i, slice):
                out.append(len(range(n)[i]))
        return tuple(out)

    from widelimit.kernels.rules.pool import map_kernel
    return map_kernel(k, fn, shape1=shape(k.shape1), shape2=shape(k.shape2))


def check_index(idx: tuple, shape: tuple) -> None:
    """ValueError naming ``idx`` if it has more entries than ``shape`` has axes or an integer
    entry is outside its axis."""
    if len(idx) > len(shape):
        raise ValueError(f"`idx` {idx!r} has more entries than the inputs have axes "
                         f"(shape {tuple(shape)}).")
    for axis, (i, n) in enumerate(zip(idx, shape)):
        if isinstance(i, int) and not -n <= i < n:
            raise ValueError(f"`idx` entry {i} is out of range for axis {axis} of size {n} "
                             f"(inputs of shape {tuple(shape)}).")


class IndexModule(nn.Module):
    def __init__(self, idx: tuple):
        super().__init__()
        self.idx = idx

    def forward_masked(self, x: Tensor, mask: Tensor):
        return self(x), mask[(slice(None),) + self.idx[2:]]

    def forward(self, x: Tensor) -> Tensor:
        check_index(self.idx, tuple(x.shape))
        return x[self.idx]


class Index(Layer):
    """Index / slice the channel and spatial axes of (N, C, *S) inputs, e.g.
    ``Index((slice(None), slice(None), slice(1, -1), 0))`` (or ``Slice[:, :, 1:-1, 0]``).

    The batch axis must be kept whole (``slice(None)``); integers drop a spatial axis.
    Channel slices only change the width (channels are i.i.d. at infinite width).
    """

    def __init__(self, idx):
        idx = idx if isinstance(idx, tuple) else (idx,)
        if any(i is Ellipsis or i is None for i in idx):
            raise ValueError("`idx` must be integers and slices, one per axis (no ... or None).")
        if not idx or idx[0] != slice(None):
            raise ValueError(f"`idx` must keep the batch axis whole (start with a full slice), got {idx!r}.")
        if len(idx) > 1 and not isinstance(idx[1], slice):
            raise ValueError("`idx` cannot drop the channel axis with an integer; use a slice.")
        for i in idx[2:]:
            if isinstance(i, slice) and i.step not in (None, 1) and i.step < 1:
                raise ValueError(f"`idx` slices need a positive step, got {i!r}.")
            if not isinstance(i, (int, slice)):
                raise ValueError(f"`idx` entries must be integers or slices, got {i!r}.")
        self.idx = idx + (slice(None),) * max(0, 2 - len(idx))

    def apply_kernel(self, k: Kernel) -> Kernel:
        check_index(self.idx, tuple(k.shape1))
        return map_masks(_index_kernel(k, self.idx), self.mask_fn)

    def mask_fn(self, mask: Tensor) -> Tensor:
        """The position mask indexed like the spatial axes."""
        return mask[(slice(None),) + self.idx[2:]]

    def build(self) -> nn.Module:
        return IndexModule(self.idx)

    def __repr__(self) -> str:
        return f"Index({self.idx!r})"


class _Slice:
    """``Slice[:, :, 1:-1]`` builds ``Index((slice(None), slice(None), slice(1, -1)))``."""

    def __getitem__(self, idx) -> Index:
        return Index(idx)


Slice = _Slice()
