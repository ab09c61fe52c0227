"""Flatten (and, later, Index/Slice and ImageResize) layers."""
from __future__ import annotations

from torch import Tensor, nn

from widelimit.kernels.rules.pool import flatten_rule
from widelimit.kernels.state import Kernel
from widelimit.layers.base import Layer

__all__ = ["Flatten", "FlattenModule"]


class FlattenModule(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


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
