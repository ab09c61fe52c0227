"""Dense (fully connected) layer: kernel rule and finite module."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from widelimit._tensors import check_positive
from widelimit.kernels.rules.affine import dense_rule
from widelimit.kernels.state import Kernel
from widelimit.layers.base import Layer

PARAMETERIZATIONS = ("ntk", "standard")


def check_affine_args(W_std, b_std, parameterization: str, s) -> str:
    check_positive(W_std, "W_std")
    check_positive(b_std, "b_std", allow_zero=True, allow_none=True)
    p = str(parameterization).lower()
    if p not in PARAMETERIZATIONS:
        raise ValueError(f"`parameterization` must be one of {PARAMETERIZATIONS}, got {parameterization!r}.")
    if len(s) != 2 or any((not isinstance(v, int)) or v < 1 for v in s):
        raise ValueError(f"`s` must be a pair of positive integers, got {s!r}.")
    return p


def _float(v) -> Optional[float]:
    return None if v is None else float(v.detach()) if isinstance(v, Tensor) else float(v)


def init_affine_(weight: Tensor, bias: Optional[Tensor], parameterization: str, W_std: float,
                 b_std: Optional[float], fan_in: int, s0: int) -> None:
    """Initialise a random affine layer in place (shared by Dense and Conv modules).

    NTK parametrization: W, b ~ N(0, 1) (the scales live in the forward pass);
    standard: W ~ N(0, W_std^2 s0 / fan_in), b ~ N(0, b_std^2).
    """
    with torch.no_grad():
        if parameterization == "ntk":
            weight.normal_()
            if bias is not None:
                bias.normal_()
        else:
            weight.normal_(0.0, W_std / math.sqrt(fan_in / s0))
            if bias is not None:
                bias.normal_(0.0, b_std)


class DenseModule(nn.LazyLinear):
    """Finite dense layer acting on the last axis.

    NTK parametrization: W, b ~ N(0, 1), ``y = W_std / sqrt(n) x W^T + b_std b``.
    Standard: W ~ N(0, W_std^2 s0 / n), b ~ N(0, b_std^2), ``y = x W^T / sqrt(s0) + b``.
    """

    cls_to_become = None
    mask_pointwise = True        # acts on each example (and position) separately
    structured_kind = "linear"   # lets widelimit.empirical use the structured NTK for it

    def __init__(self, out_features: int, W_std: float, b_std: Optional[float],
                 parameterization: str, s: tuple[int, int]):
        self.W_std, self.b_std = W_std, b_std
        self.parameterization, self.s = parameterization, s
        super().__init__(out_features * (s[1] if parameterization == "standard" else 1),
                         bias=b_std is not None)

    def initialize_parameters(self, input: Tensor) -> None:  # noqa: A002 - torch's name
        """Materialise with the first input's size, dtype and device."""
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.in_features = input.shape[-1]
                kw = dict(dtype=input.dtype, device=input.device)
                self.weight.materialize((self.out_features, self.in_features), **kw)
                if self.bias is not None:
                    self.bias.materialize((self.out_features,), **kw)
                self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.has_uninitialized_params() or self.in_features == 0:
            return
        init_affine_(self.weight, self.bias, self.parameterization, self.W_std, self.b_std,
                     self.in_features, self.s[0])

    @property
    def weight_multiplier(self) -> float:
        if self.parameterization == "ntk":
            return self.W_std / math.sqrt(self.in_features)
        return 1.0 / math.sqrt(self.s[0])

    @property
    def bias_multiplier(self) -> float:
        return self.b_std if self.parameterization == "ntk" else 1.0

    def forward(self, x: Tensor) -> Tensor:
        """``weight_multiplier * x W^T + bias_multiplier * b``."""
        out = nn.functional.linear(x, self.weight) * self.weight_multiplier
        return out if self.bias is None else out + self.bias_multiplier * self.bias

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, W_std={self.W_std}, "
                f"b_std={self.b_std}, parameterization={self.parameterization!r}")


class Dense(Layer):
    """Fully connected layer, ``neural_tangents.stax.Dense`` compatible.

    Args:
        out_dim: output width (ignored by the kernel in NTK parametrization).
        W_std: weight standard deviation (float, or a 0-d tensor to differentiate).
        b_std: bias standard deviation; None for no bias.
        parameterization: ``"ntk"`` (Jacot et al. 2018) or ``"standard"``
            (Sohl-Dickstein et al. 2020).
        s: width scalings ``(s_in, s_out)`` of the standard parametrization.
    """

    width_attr = "out_dim"

    def __init__(self, out_dim: int, W_std=1.0, b_std=None, parameterization: str = "ntk",
                 s: tuple[int, int] = (1, 1)):
        if not isinstance(out_dim, int) or isinstance(out_dim, bool) or out_dim < 1:
            raise ValueError(f"`out_dim` must be a positive integer, got {out_dim!r}.")
        self.parameterization = check_affine_args(W_std, b_std, parameterization, s)
        self.out_dim, self.W_std, self.b_std, self.s = out_dim, W_std, b_std, tuple(s)

    def apply_kernel(self, k: Kernel, pair: bool = True) -> Kernel:
        if k.n_spatial:
            raise ValueError(f"Dense acts on vectors; got inputs of shape {k.shape1} (use Flatten or "
                             "GlobalAvgPool first, or a 1x1 Conv).")
        width = self.out_dim * (self.s[1] if self.parameterization == "standard" else 1)
        return dense_rule(k, self.W_std, self.b_std, self.parameterization,
                          k.shape1[1] / self.s[0], (k.shape1[0], width), (k.shape2[0], width), pair)

    def input_width(self, k: Kernel) -> float:
        return k.shape1[1] / self.s[0]

    def build(self) -> nn.Module:
        return DenseModule(self.out_dim, _float(self.W_std), _float(self.b_std),
                           self.parameterization, self.s)

    def __repr__(self) -> str:
        return (f"Dense({self.out_dim}, W_std={self.W_std}, b_std={self.b_std}, "
                f"parameterization={self.parameterization!r})")
