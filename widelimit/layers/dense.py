"""Dense (fully connected) layer: kernel rule and finite module.

On vectors (N, C) it is the usual random affine layer.  On sequences and images it acts on
the channel axis of every position separately (neural-tangents' ``channel_axis``), which is a
convolution with a 1x1 filter: its kernel is the convolution rule
(:func:`widelimit.kernels.rules.conv.conv_rule`) with filter size 1, in either spatial layout.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from widelimit._validate import Int, Real
from widelimit.kernels.rules.affine import dense_rule
from widelimit.kernels.state import Kernel
from widelimit.layers.base import Layer

PARAMETERIZATIONS = ("ntk", "standard")


#: the hyperparameter specs of random affine layers (Dense, Conv), checked by Layer
AFFINE_SPECS = {"W_std": Real(min=0.0, open_min=True, tensor=True),
                "b_std": Real(min=0.0, tensor=True, allow_none=True)}


def check_affine_args(W_std, b_std, parameterization: str, s) -> str:
    AFFINE_SPECS["W_std"]("W_std", W_std)
    AFFINE_SPECS["b_std"]("b_std", b_std)
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


def resolve_channel_axis(channel_axis: int, ndim: int) -> int:
    """``channel_axis`` as a non-negative axis of an ``ndim``-dimensional input (never the batch axis 0)."""
    if not -ndim <= channel_axis < ndim or channel_axis % ndim == 0:
        raise ValueError(f"`channel_axis` {channel_axis} is not a channel axis of inputs with {ndim} "
                         f"dimensions (axis 0 is the batch axis).")
    return channel_axis % ndim


class DenseModule(nn.LazyLinear):
    """Finite dense layer acting on the channel axis, at every position separately.

    NTK parametrization: W, b ~ N(0, 1), ``y = W_std / sqrt(n) x W^T + b_std b``.
    Standard: W ~ N(0, W_std^2 s0 / n), b ~ N(0, b_std^2), ``y = x W^T / sqrt(s0) + b``.
    On (N, ..., C, ...) inputs ``x`` is the vector of channels at ``channel_axis``; the output
    is in PyTorch layout (N, out, *spatial) (for ``channel_axis=1`` the input's own layout).
    """

    cls_to_become = None
    mask_pointwise = True        # acts on each example (and position) separately
    #: lets widelimit.empirical use the structured NTK for it (vector inputs; see __init__)
    structured_kind: Optional[str] = "linear"

    def __init__(self, out_features: int, W_std: float, b_std: Optional[float],
                 parameterization: str, s: tuple[int, int], channel_axis: int = 1):
        self.W_std, self.b_std = W_std, b_std
        self.parameterization, self.s = parameterization, s
        self.channel_axis = channel_axis
        #: structured empirical NTKs (widelimit.empirical) read inputs and outputs as
        #: channels-last vectors: declared only once the module has met vector inputs
        self.structured_kind = "linear"
        super().__init__(out_features * (s[1] if parameterization == "standard" else 1),
                         bias=b_std is not None)

    def initialize_parameters(self, input: Tensor) -> None:  # noqa: A002 - torch's name
        """Materialise with the first input's size, dtype and device."""
        if self.has_uninitialized_params():
            with torch.no_grad():
                if input.ndim > 2:
                    self.structured_kind = None
                self.in_features = input.shape[resolve_channel_axis(self.channel_axis, input.ndim)]
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
        """``weight_multiplier * x W^T + bias_multiplier * b`` on the channel axis."""
        axis = resolve_channel_axis(self.channel_axis, x.ndim) if x.ndim > 2 else x.ndim - 1
        if axis != x.ndim - 1:
            x = x.movedim(axis, -1)
        out = nn.functional.linear(x, self.weight) * self.weight_multiplier
        out = out if self.bias is None else out + self.bias_multiplier * self.bias
        return out.movedim(-1, 1) if out.ndim > 2 else out

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
        channel_axis: the axis of the channels on sequences and images, where the layer acts
            on every position separately (a 1x1 convolution, Novak et al. 2019).  The
            default 1 is PyTorch's layout (N, C, *spatial), the layout of every other layer
            here (neural-tangents' default -1 is its channels-last layout).  Another axis,
            e.g. ``channel_axis=-1`` for (N, L, d) token inputs, is allowed on the
            network's first layer only (reached through ``serial``): ``kernel_fn`` moves the
            inputs' channel axis to 1 and the finite module writes PyTorch layout
            (N, out_dim, *spatial), so attention, pooling and convolutions follow as usual.
            Vectors (N, C) have one channel axis; any ``channel_axis`` means it.
    """

    width_attr = "out_dim"
    hyperparameters = {**AFFINE_SPECS, "out_dim": Int(min=1)}

    def __init__(self, out_dim: int, W_std=1.0, b_std=None, parameterization: str = "ntk",
                 s: tuple[int, int] = (1, 1), channel_axis: int = 1):
        if not isinstance(channel_axis, int) or isinstance(channel_axis, bool) or channel_axis == 0:
            raise ValueError(f"`channel_axis` must be a non-zero integer axis (0 is the batch axis), "
                             f"got {channel_axis!r}.")
        self.parameterization = check_affine_args(W_std, b_std, parameterization, s)
        self.out_dim, self.W_std, self.b_std, self.s = out_dim, W_std, b_std, tuple(s)
        self.channel_axis = channel_axis

    def input_channel_axis(self) -> int:
        return self.channel_axis

    def apply_kernel(self, k: Kernel, pair: bool = True) -> Kernel:
        if k.n_spatial:
            return self._per_position(k)
        width = self.out_dim * (self.s[1] if self.parameterization == "standard" else 1)
        return dense_rule(k, self.W_std, self.b_std, self.parameterization,
                          k.shape1[1] / self.s[0], (k.shape1[0], width), (k.shape2[0], width), pair)

    def _per_position(self, k: Kernel) -> Kernel:
        """On (N, C, *S): the 1x1 convolution with the same hyperparameters (its rule, masks
        and checks; the sum over a one-position filter is the identity)."""
        if resolve_channel_axis(self.channel_axis, len(k.shape1)) != 1 and not k.is_input:
            raise ValueError(
                f"Dense(channel_axis={self.channel_axis}) on inputs of shape {k.shape1}: inside a "
                "network activations are in PyTorch layout (N, C, *spatial), so only the first "
                "layer may read another channel axis; use channel_axis=1 here.")
        from widelimit.layers.conv import Conv
        n = k.n_spatial
        conv = Conv(self.out_dim, (1,) * n, W_std=self.W_std, b_std=self.b_std,
                    parameterization=self.parameterization, s=self.s)
        return conv.apply_kernel(k, sums=lambda mat, batch_ndim: mat)

    def input_width(self, k: Kernel) -> float:
        return k.shape1[1] / self.s[0]

    def build(self) -> nn.Module:
        return DenseModule(self.out_dim, _float(self.W_std), _float(self.b_std),
                           self.parameterization, self.s, self.channel_axis)

    def __repr__(self) -> str:
        axis = "" if self.channel_axis == 1 else f", channel_axis={self.channel_axis}"
        return (f"Dense({self.out_dim}, W_std={self.W_std}, b_std={self.b_std}, "
                f"parameterization={self.parameterization!r}{axis})")
