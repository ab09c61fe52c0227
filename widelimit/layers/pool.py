"""Pooling layers: AvgPool, SumPool, GlobalAvgPool, GlobalSumPool (and their modules).

Semantics follow ``neural_tangents.stax`` on (N, C, *spatial) inputs; kernel rules in
:mod:`widelimit.kernels.rules.pool`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from widelimit.kernels.rules.conv import box_sum, check_padding
from widelimit.kernels.rules.pool import global_pool_rule, pool_rule
from widelimit.kernels.masking import all_masked, map_masks, remask, unmasked_counts, window_mask
from widelimit.kernels.state import Kernel
from widelimit.layers.base import Layer
from widelimit.layers.conv import check_spatial, check_tuple, pad_input
from widelimit.layers.masking import ZeroMaskedInput, zero_masked

__all__ = ["AvgPool", "SumPool", "GlobalAvgPool", "GlobalSumPool", "PoolModule", "GlobalPoolModule"]


class PoolModule(ZeroMaskedInput, nn.Module):
    """Finite average / sum pooling over the spatial axes with lax-style padding (masked
    positions count as zeros, as neural-tangents)."""

    def __init__(self, window, strides, padding: str, average: bool, normalize_edges: bool):
        super().__init__()
        self.window, self.strides, self.padding = tuple(window), tuple(strides), padding
        self.average, self.normalize_edges = average, normalize_edges

    def mask_fn(self, mask: Tensor) -> Tensor:
        return window_mask(mask, self.window, self.strides, self.padding)

    def forward(self, x: Tensor) -> Tensor:
        check_spatial(tuple(x.shape), len(self.window), "Pool")
        if self.padding == "CIRCULAR":
            x = pad_input(x, self.window, self.strides, "CIRCULAR")
            pad = "VALID"
        else:
            pad = self.padding
        out = x
        for i, (f, s) in enumerate(zip(self.window, self.strides)):
            out = box_sum(out, 2 + i, f, s, pad)
        if self.average:
            if self.normalize_edges and pad == "SAME":
                ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
                for i, (f, s) in enumerate(zip(self.window, self.strides)):
                    ones = box_sum(ones, 2 + i, f, s, pad)
                out = out / ones
            else:
                size = 1
                for f in self.window:
                    size *= f
                out = out / size
        return out


class _Pool(Layer):
    needs_full_spatial = True
    average = True

    def __init__(self, window_shape: Sequence[int], strides: Optional[Sequence[int]] = None,
                 padding: str = "VALID", normalize_edges: bool = False):
        self.window_shape = check_tuple(window_shape, None, "window_shape")
        n = len(self.window_shape)
        self.strides = (1,) * n if strides is None else check_tuple(strides, n, "strides")
        self.padding = check_padding(padding)
        self.normalize_edges = bool(normalize_edges)

    def apply_kernel(self, k: Kernel) -> Kernel:
        check_spatial(k.shape1, len(self.window_shape), type(self).__name__)
        out = pool_rule(remask(k), self.window_shape, self.strides, self.padding, self.average,
                        self.normalize_edges)
        return map_masks(out, self.mask_fn)

    def mask_fn(self, mask: Tensor) -> Tensor:
        """Output position mask: the input mask at each window's centre (masked positions
        inside a window count as zeros, as neural-tangents' AvgPool)."""
        return window_mask(mask, self.window_shape, self.strides, self.padding)

    def build(self) -> nn.Module:
        return PoolModule(self.window_shape, self.strides, self.padding, self.average,
                          self.normalize_edges)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.window_shape}, strides={self.strides}, "
                f"padding={self.padding!r})")


class AvgPool(_Pool):
    """Average pooling, ``neural_tangents.stax.AvgPool`` compatible.

    Args:
        window_shape: window per spatial dimension.
        strides: default 1 in every dimension (as neural-tangents).
        padding: ``"VALID"``, ``"SAME"`` or ``"CIRCULAR"``.
        normalize_edges: with SAME padding, divide by the number of valid positions in
            each window instead of the window size.
    """


class SumPool(_Pool):
    """Sum pooling (``neural_tangents.stax.SumPool``); arguments as :class:`AvgPool`."""
    average = False

    def __init__(self, window_shape: Sequence[int], strides: Optional[Sequence[int]] = None,
                 padding: str = "VALID"):
        super().__init__(window_shape, strides, padding, False)


class GlobalPoolModule(nn.Module):
    def __init__(self, average: bool):
        super().__init__()
        self.average = average

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 3:
            raise ValueError(f"Global pooling needs (N, C, *spatial) inputs, got shape {tuple(x.shape)}.")
        axes = tuple(range(2, x.ndim))
        return x.mean(axes) if self.average else x.sum(axes)

    def forward_masked(self, x: Tensor, mask: Tensor):
        """Pool over the unmasked positions (the mean divides by their number)."""
        out = zero_masked(x, mask).sum(tuple(range(2, x.ndim)))
        if self.average:
            out = out / unmasked_counts(mask, x.dtype)[:, None]
        return out, all_masked(mask)


class GlobalAvgPool(Layer):
    """Mean over all spatial positions: (N, C, *S) -> (N, C)."""
    needs_full_spatial = True
    average = True

    def apply_kernel(self, k: Kernel) -> Kernel:
        return global_pool_rule(remask(k), self.average)

    def build(self) -> nn.Module:
        return GlobalPoolModule(self.average)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GlobalSumPool(GlobalAvgPool):
    """Sum over all spatial positions: (N, C, *S) -> (N, C)."""
    average = False
