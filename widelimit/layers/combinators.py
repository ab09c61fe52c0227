"""Combinators: serial, parallel, FanOut, FanInSum/Prod/Concat, Identity, repeat.

Branching follows ``neural_tangents.stax``: ``FanOut(n)`` turns one kernel (one
tensor) into a list of n; ``parallel`` applies one layer per list element;
``FanIn*`` merges the list back into one.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from widelimit.kernels.rules.fused import (fused_dense_elementwise, native_attention_pool,
                                           native_chain, native_pool)
from widelimit.kernels.rules.branching import fan_in_concat_rule, fan_in_prod_rule, fan_in_sum_rule
from widelimit.kernels.masking import merge_masks
from widelimit.kernels.state import Kernel
from widelimit._validate import Int, check_int
from widelimit.layers.base import Layer
from widelimit.layers.dense import Dense
from widelimit.layers.masking import SerialModule, forward_masked
from widelimit.layers.nonlinear import Nonlinearity
from widelimit.layers.attention import GlobalSelfAttention
from widelimit.layers.pool import GlobalAvgPool


def _check_layers(layers: Sequence, who: str) -> tuple[Layer, ...]:
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"{who}: argument {i} must be a widelimit layer, got {type(layer).__name__}.")
    return tuple(layers)


class Serial(Layer):
    clears_scratch = True

    def __init__(self, *layers: Layer):
        self.layers = _check_layers(layers, "serial")

    def children(self):
        return self.layers

    def input_channel_axis(self) -> int:
        return self.layers[0].input_channel_axis() if self.layers else 1

    def apply_kernel(self, k):
        i = 0
        while i < len(self.layers):
            layer = self.layers[i]
            nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
            if isinstance(k, Kernel) and isinstance(layer, Dense):
                chain = native_chain(k, self._dense_pairs(i))     # one native pass, if it applies
                if chain is not None:
                    k, i = chain[0], i + chain[1]
                    continue
            if isinstance(k, Kernel) and k.scratch:     # only a native chain may overwrite it
                k = k.replace(scratch=False)
            if isinstance(k, Kernel) and isinstance(layer, Dense) and isinstance(nxt, Nonlinearity):
                fused = fused_dense_elementwise(k, layer, nxt)   # one compiled pass, if it applies
                if fused is not None:
                    k, i = fused, i + 2
                    continue
            after = self.layers[i + 2] if i + 2 < len(self.layers) else None
            if (isinstance(k, Kernel) and isinstance(layer, GlobalSelfAttention)
                    and isinstance(nxt, Nonlinearity) and isinstance(after, GlobalAvgPool)):
                pooled = native_attention_pool(k, layer, nxt, after.average)  # from its factors
                if pooled is not None:
                    k, i = pooled, i + 3
                    continue
            if isinstance(k, Kernel) and isinstance(layer, Nonlinearity) and isinstance(nxt, GlobalAvgPool):
                pooled = native_pool(k, layer, nxt.average)      # summed as made, if it applies
                if pooled is not None:
                    k, i = pooled, i + 2
                    continue
            k = layer.apply_kernel(k)
            i += 1
        return k

    def _dense_pairs(self, i: int) -> list:
        """``(Dense, Nonlinearity or None)`` pairs from layer ``i`` on, while layers are Dense."""
        pairs = []
        while i < len(self.layers) and isinstance(self.layers[i], Dense):
            nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
            nxt = nxt if isinstance(nxt, Nonlinearity) else None
            pairs.append((self.layers[i], nxt))
            i += 1 if nxt is None else 2
        return pairs

    def build(self) -> nn.Module:
        return SerialModule(*(layer.build() for layer in self.layers))

    def map(self, fn):
        return fn(Serial(*(layer.map(fn) for layer in self.layers)))

    def __repr__(self):
        return "serial(" + ", ".join(map(repr, self.layers)) + ")"


def serial(*layers: Layer) -> Serial:
    """Compose layers in sequence."""
    return Serial(*layers)


def repeat(layer: Layer, n: int) -> Serial:
    """``serial(layer, layer, ..., layer)``, n times (independent weights in the finite net)."""
    check_int("n", n, min=1)
    return Serial(*([layer] * n))


class ParallelModule(nn.Module):
    def __init__(self, modules: Sequence[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(modules)

    def forward(self, xs):
        if not isinstance(xs, (tuple, list)) or len(xs) != len(self.branches):
            raise ValueError(f"parallel expects a tuple of {len(self.branches)} inputs (use FanOut "
                             f"first), got {type(xs).__name__}.")
        return tuple(m(x) for m, x in zip(self.branches, xs))

    def forward_masked(self, xs, masks):
        outs = [forward_masked(m, x, mask) for m, x, mask in zip(self.branches, xs, masks)]
        return tuple(o for o, _ in outs), tuple(m for _, m in outs)


class Parallel(Layer):
    def __init__(self, *layers: Layer):
        self.layers = _check_layers(layers, "parallel")

    def children(self):
        return self.layers

    def apply_kernel(self, ks):
        if not isinstance(ks, (list, tuple)) or len(ks) != len(self.layers):
            raise ValueError(f"parallel of {len(self.layers)} layers needs {len(self.layers)} input "
                             f"branches: put FanOut({len(self.layers)}) before it.")
        return [layer.apply_kernel(k) for layer, k in zip(self.layers, ks)]

    def build(self) -> nn.Module:
        return ParallelModule([layer.build() for layer in self.layers])

    def map(self, fn):
        return fn(Parallel(*(layer.map(fn) for layer in self.layers)))

    def __repr__(self):
        return "parallel(" + ", ".join(map(repr, self.layers)) + ")"


def parallel(*layers: Layer) -> Parallel:
    """Apply the i-th layer to the i-th input branch."""
    return Parallel(*layers)


class FanOutModule(nn.Module):
    def __init__(self, num: int):
        super().__init__()
        self.num = num

    def forward(self, x):
        return tuple([x] * self.num)

    def forward_masked(self, x, mask):
        return tuple([x] * self.num), tuple([mask] * self.num)


class FanOut(Layer):
    """Copy the input into ``num`` branches."""

    hyperparameters = {"num": Int(min=1)}

    def __init__(self, num: int):
        self.num = num

    def apply_kernel(self, k: Kernel):
        if isinstance(k, (list, tuple)):
            raise ValueError("FanOut expects a single branch; merge branches with FanIn* first.")
        return [k] * self.num

    def build(self) -> nn.Module:
        return FanOutModule(self.num)

    def __repr__(self):
        return f"FanOut({self.num})"


class _FanInModule(nn.Module):
    def __init__(self, op: str, axis: int = 1):
        super().__init__()
        self.op, self.axis = op, axis

    def forward(self, xs):
        if self.op == "sum":
            return sum(xs[1:], xs[0])
        if self.op == "prod":
            out = xs[0]
            for x in xs[1:]:
                out = out * x
            return out
        return torch.cat(tuple(xs), dim=self.axis)

    def forward_masked(self, xs, masks):
        return self(xs), merge_masks(list(masks))


class _FanIn(Layer):
    op = ""

    def apply_kernel(self, ks):
        if not isinstance(ks, (list, tuple)):
            raise ValueError(f"{type(self).__name__} merges branches: put FanOut and parallel before it.")
        out = self.rule(ks)
        if any(k.mask1 is not None or k.mask2 is not None for k in ks):
            out = out.replace(mask1=merge_masks([k.mask1 for k in ks]),
                              mask2=merge_masks([k.mask2 for k in ks]))
        return out

    def build(self) -> nn.Module:
        return _FanInModule(self.op)

    def __repr__(self):
        return f"{type(self).__name__}()"


class FanInSum(_FanIn):
    """Sum the branches (e.g. a residual connection)."""
    op = "sum"

    def rule(self, ks):
        return fan_in_sum_rule(ks)


class FanInProd(_FanIn):
    """Multiply the branches elementwise."""
    op = "prod"

    def rule(self, ks):
        return fan_in_prod_rule(ks)


class FanInConcat(_FanIn):
    """Concatenate the branches along the channel axis (1 in PyTorch layout; -1 = last
    axis is accepted for vector inputs, as in neural-tangents)."""
    op = "concat"

    def __init__(self, axis: int = 1):
        if axis not in (1, -1):
            raise ValueError(f"FanInConcat supports the channel axis only (axis=1, or -1 for "
                             f"vectors), got axis={axis}.")
        self.axis = axis

    def rule(self, ks):
        if self.axis == -1 and ks[0].n_spatial:
            raise ValueError("FanInConcat(axis=-1) on images would concatenate a spatial axis; "
                             "use axis=1 (channels in PyTorch layout).")
        return fan_in_concat_rule(ks)

    def build(self) -> nn.Module:
        return _FanInModule("concat", self.axis)


class Identity(Layer):
    """Pass the input through unchanged."""

    def apply_kernel(self, k):
        return k

    def build(self) -> nn.Module:
        return nn.Identity()


