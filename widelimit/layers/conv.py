"""Convolutional layers: Conv (1/2/3-D), ConvLocal (unshared weights), ConvTranspose, and
their modules.

Inputs use PyTorch's layout (N, C, *spatial); hyperparameters and defaults follow
``neural_tangents.stax.Conv`` (padding "VALID" by default, "SAME", "CIRCULAR").
Kernel rules: :mod:`widelimit.kernels.rules.conv`, :mod:`widelimit.kernels.rules.conv_transpose`.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from widelimit.kernels.rules.conv import (check_padding, conv_local_rule, conv_out_size, conv_pads,
                                          conv_rule, pad_axis)
from widelimit.kernels.masking import map_masks, remask, window_mask
from widelimit.kernels.rules.conv_transpose import (conv_transpose_rule, transpose_out_size,
                                                    transpose_pads, wrap_axis)
from widelimit.kernels.state import Kernel
from widelimit.layers.base import Layer
from widelimit._validate import Int
from widelimit.layers.dense import AFFINE_SPECS, _float, check_affine_args, init_affine_
from widelimit.layers.masking import ZeroMaskedInput, mask_unsupported

__all__ = ["Conv", "ConvLocal", "ConvTranspose", "ConvModule", "ConvLocalModule",
           "ConvTransposeModule", "pad_input", "check_tuple"]


def check_tuple(value, n: Optional[int], name: str) -> tuple[int, ...]:
    t = (value,) if isinstance(value, int) else tuple(value)
    if not t or any((not isinstance(v, int)) or isinstance(v, bool) or v < 1 for v in t):
        raise ValueError(f"`{name}` must be a positive integer or a tuple of them, got {value!r}.")
    if n is not None and len(t) != n:
        raise ValueError(f"`{name}` must have {n} entries (one per spatial dimension), got {value!r}.")
    return t


def check_spatial(shape: tuple, n: int, who: str) -> None:
    if len(shape) - 2 != n:
        raise ValueError(
            f"{who} has {n} spatial dimension(s) but the inputs `x1`/`x2` have "
            f"{len(shape) - 2} (shape {shape} here; expected (N, C{', S' * n}) in PyTorch layout).")


def pad_input(x: Tensor, window, strides, padding: str) -> Tensor:
    """Pad an (N, C, *S) input as lax SAME (zeros) or CIRCULAR (periodic)."""
    if padding == "VALID":
        return x
    for i, (f, s) in enumerate(zip(window, strides)):
        lo, hi = conv_pads(x.shape[2 + i], f, s, padding)
        x = pad_axis(x, 2 + i, lo, hi, padding == "CIRCULAR")
    return x


class _LazyAffine(ZeroMaskedInput, LazyModuleMixin, nn.Module):
    """Shared lazy initialisation in the NTK or standard parametrization."""

    cls_to_become = None

    def __init__(self, out_chan: int, filter_shape, strides, padding: str, W_std: float,
                 b_std: Optional[float], parameterization: str, s: tuple[int, int]):
        super().__init__()
        self.out_chan = out_chan * (s[1] if parameterization == "standard" else 1)
        self.filter_shape, self.strides, self.padding = tuple(filter_shape), tuple(strides), padding
        self.W_std, self.b_std, self.parameterization, self.s = W_std, b_std, parameterization, s
        self.in_chan = 0
        self.weight = UninitializedParameter()
        self.bias = UninitializedParameter() if b_std is not None else None

    def _shapes(self, x: Tensor) -> tuple[tuple, tuple]:  # pragma: no cover - abstract
        raise NotImplementedError

    def initialize_parameters(self, x: Tensor) -> None:
        if not self.has_uninitialized_params():
            return
        check_spatial(tuple(x.shape), len(self.filter_shape), type(self).__name__)
        self.in_chan = x.shape[1]
        w_shape, b_shape = self._shapes(x)
        with torch.no_grad():
            kw = dict(dtype=x.dtype, device=x.device)
            self.weight.materialize(w_shape, **kw)
            if self.bias is not None:
                self.bias.materialize(b_shape, **kw)
            self.reset_parameters()

    @property
    def fan_in(self) -> int:
        return self.in_chan * math.prod(self.filter_shape)

    def reset_parameters(self) -> None:
        if self.has_uninitialized_params():
            return
        init_affine_(self.weight, self.bias, self.parameterization, self.W_std, self.b_std,
                     self.fan_in, self.s[0])

    def _finish(self, out: Tensor) -> Tensor:
        if self.parameterization == "ntk":
            out = out * (self.W_std / math.sqrt(self.fan_in))
            scale = self.b_std
        else:
            out = out / math.sqrt(self.s[0])
            scale = 1.0
        if self.bias is None:
            return out
        b = self.bias if self.bias.ndim > 1 else self.bias.reshape((-1,) + (1,) * (out.ndim - 2))
        return out + scale * b

    def mask_fn(self, mask: Tensor) -> Tensor:
        return window_mask(mask, self.filter_shape, self.strides, self.padding)

    def extra_repr(self) -> str:
        return (f"in={self.in_chan}, out={self.out_chan}, filter_shape={self.filter_shape}, "
                f"strides={self.strides}, padding={self.padding!r}, W_std={self.W_std}, "
                f"b_std={self.b_std}, parameterization={self.parameterization!r}")


_CONV = {1: nn.functional.conv1d, 2: nn.functional.conv2d, 3: nn.functional.conv3d}


class ConvModule(_LazyAffine):
    """Finite convolution with weights ~ N(0, 1) scaled by W_std / sqrt(C |F|) (NTK)."""

    def _shapes(self, x):
        return (self.out_chan, x.shape[1]) + self.filter_shape, (self.out_chan,)

    def forward(self, x: Tensor) -> Tensor:
        x = pad_input(x, self.filter_shape, self.strides, self.padding)
        return self._finish(_CONV[len(self.filter_shape)](x, self.weight, stride=self.strides))


_CONV_T = {1: nn.functional.conv_transpose1d, 2: nn.functional.conv_transpose2d,
           3: nn.functional.conv_transpose3d}


class ConvTransposeModule(_LazyAffine):
    """Finite transposed convolution, ``jax.lax.conv_transpose`` semantics (no filter flip):
    ``y[o] = sum_d W[d] x_dilated[o + d - lo]``, with neural-tangents' output sizes and its
    CIRCULAR fold; weights as :class:`ConvModule` (fan-in ``C |F|``)."""

    def _shapes(self, x):     # (out, in, *F) as ConvModule, so width-scaling tools agree
        return (self.out_chan, x.shape[1]) + self.filter_shape, (self.out_chan,)

    def forward_masked(self, x: Tensor, mask: Optional[Tensor]):
        raise mask_unsupported("ConvTranspose")

    def forward(self, x: Tensor) -> Tensor:
        n = len(self.filter_shape)
        # torch's transposed convolution takes (in, out, *F) and flips the filter
        w = self.weight.transpose(0, 1).flip(tuple(range(2, 2 + n)))
        y = _CONV_T[n](x, w, stride=self.strides)         # (n - 1) s + f positions per axis
        pad = "VALID" if self.padding == "CIRCULAR" else self.padding
        for i, (f, s) in enumerate(zip(self.filter_shape, self.strides)):
            ax, size_in = 2 + i, x.shape[2 + i]
            start = f - 1 - transpose_pads(f, s, pad)[0]
            size = transpose_out_size(size_in, f, s, pad)
            y = y.narrow(ax, start, min(size, y.shape[ax] - start))
            y = pad_axis(y, ax, 0, size - y.shape[ax], False)
            if self.padding == "CIRCULAR":
                y = wrap_axis(y, ax, transpose_out_size(size_in, f, s, "CIRCULAR"))
        return self._finish(y)


def extract_patches(x: Tensor, window, strides) -> Tensor:
    """(N, C, *S) (already padded) -> (N, C, *S_out, *window)."""
    for i, (f, s) in enumerate(zip(window, strides)):
        x = x.unfold(2 + i, f, s)
    return x


class ConvLocalModule(_LazyAffine):
    """Finite locally connected layer: a separate filter (and bias) at every output position."""

    def _shapes(self, x):
        sp = tuple(conv_out_size(n, f, s, self.padding)
                   for n, f, s in zip(x.shape[2:], self.filter_shape, self.strides))
        return (self.out_chan, x.shape[1]) + sp + self.filter_shape, (self.out_chan,) + sp

    def forward(self, x: Tensor) -> Tensor:
        x = pad_input(x, self.filter_shape, self.strides, self.padding)
        patches = extract_patches(x, self.filter_shape, self.strides)
        n = len(self.filter_shape)
        letters = "defghijk"
        sp, fl = letters[:n], letters[n:2 * n]
        out = torch.einsum(f"nc{sp}{fl},oc{sp}{fl}->no{sp}", patches, self.weight)
        return self._finish(out)


class Conv(Layer):
    """Convolution, ``neural_tangents.stax.Conv`` compatible, on (N, C, *spatial) inputs.

    Args:
        out_chan: output channels (ignored by the kernel in NTK parametrization).
        filter_shape: filter size per spatial dimension; its length (1, 2 or 3) fixes the
            number of spatial dimensions.
        strides: stride per spatial dimension (default 1).
        padding: ``"VALID"`` (default, as neural-tangents), ``"SAME"`` or ``"CIRCULAR"``.
        W_std, b_std, parameterization, s: as :class:`widelimit.layers.Dense`; the fan-in is
            ``C * prod(filter_shape)``.

    Kernel: Novak et al. 2019 (CNN-GP), Arora et al. 2019 (CNTK); see
    :mod:`widelimit.kernels.rules.conv`.
    """

    width_attr = "out_chan"
    hyperparameters = {**AFFINE_SPECS, "out_chan": Int(min=1)}
    _rule = staticmethod(conv_rule)
    _module = ConvModule

    def __init__(self, out_chan: int, filter_shape: Sequence[int], strides: Optional[Sequence[int]] = None,
                 padding: str = "VALID", W_std=1.0, b_std=None, parameterization: str = "ntk",
                 s: tuple[int, int] = (1, 1)):
        self.out_chan = out_chan
        self.filter_shape = check_tuple(filter_shape, None, "filter_shape")
        if len(self.filter_shape) > 3:
            raise ValueError(f"`filter_shape` must have 1, 2 or 3 entries, got {filter_shape!r}.")
        n = len(self.filter_shape)
        self.strides = (1,) * n if strides is None else check_tuple(strides, n, "strides")
        self.padding = check_padding(padding)
        self.parameterization = check_affine_args(W_std, b_std, parameterization, s)
        self.out_chan, self.W_std, self.b_std, self.s = out_chan, W_std, b_std, tuple(s)

    def apply_kernel(self, k: Kernel, sums=None) -> Kernel:
        """``sums(mat, batch_ndim)`` replaces the spatial sum over the filter (used by the
        spatial blocking of :mod:`widelimit.scale.spatial` on bands of positions)."""
        check_spatial(k.shape1, len(self.filter_shape), type(self).__name__)
        width = self.out_chan * (self.s[1] if self.parameterization == "standard" else 1)
        extra = {} if sums is None else {"sums": sums}
        out = self._rule(remask(k), self.filter_shape, self.strides, self.padding, self.W_std,
                         self.b_std, self.parameterization, self.s[0], width, **extra)
        return map_masks(out, self.mask_fn)

    def mask_fn(self, mask: Tensor) -> Tensor:
        """Output position mask: the input mask at each window's centre."""
        return window_mask(mask, self.filter_shape, self.strides, self.padding)

    def build(self) -> nn.Module:
        return self._module(self.out_chan, self.filter_shape, self.strides, self.padding,
                            _float(self.W_std), _float(self.b_std), self.parameterization, self.s)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.out_chan}, {self.filter_shape}, strides={self.strides}, "
                f"padding={self.padding!r}, W_std={self.W_std}, b_std={self.b_std}, "
                f"parameterization={self.parameterization!r})")


class ConvLocal(Conv):
    """Locally connected layer (a convolution without weight sharing), as
    ``neural_tangents.stax.ConvLocal``: outputs at different positions are independent,
    so its kernel is diagonal in space (Novak et al. 2019, LCN)."""

    _rule = staticmethod(conv_local_rule)
    _module = ConvLocalModule


class ConvTranspose(Conv):
    """Transposed convolution, ``neural_tangents.stax.ConvTranspose`` compatible, on
    (N, C, *spatial) inputs; arguments as :class:`Conv`.

    Each spatial size ``n`` becomes ``n * stride`` (SAME, CIRCULAR) or
    ``n * stride + max(filter - stride, 0)`` (VALID).  Kernel: the CNN-GP / CNTK sum over
    simultaneous filter shifts of the dilated input
    (:mod:`widelimit.kernels.rules.conv_transpose`).
    """

    _rule = staticmethod(conv_transpose_rule)
    _module = ConvTransposeModule

    def apply_kernel(self, k: Kernel) -> Kernel:
        if k.mask1 is not None or k.mask2 is not None:
            raise mask_unsupported("ConvTranspose")
        return super().apply_kernel(k)
