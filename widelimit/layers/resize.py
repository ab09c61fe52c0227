"""ImageResize: ``jax.image.resize`` of the spatial axes, ``neural_tangents.stax.ImageResize``
compatible, on (N, C, *spatial) inputs.  Kernel rule: :mod:`widelimit.kernels.rules.resize`."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from widelimit.kernels.rules.resize import check_method, resize_axis, resize_rule
from widelimit.kernels.state import Kernel
from widelimit.layers.base import Layer
from widelimit.layers.conv import check_spatial
from widelimit.layers.masking import mask_unsupported

__all__ = ["ImageResize", "ImageResizeModule"]


def _check_shape(shape) -> tuple[int, ...]:
    try:
        t = tuple(shape)
    except TypeError:
        raise ValueError(f"`shape` must be a sequence (N, C, *spatial) of sizes, got {shape!r}.") from None
    if not 3 <= len(t) <= 5:
        raise ValueError(f"`shape` must have 3 to 5 entries (N, C, then 1-3 spatial sizes), got {shape!r}.")
    if any(not isinstance(v, int) or isinstance(v, bool) or (v < 1 and v != -1) for v in t):
        raise ValueError(f"`shape` entries must be positive integers or -1 (keep), got {shape!r}.")
    if t[0] != -1 or t[1] != -1:
        raise ValueError(f"`shape` must keep the batch and channel axes (-1 in the first two "
                         f"entries; channels are infinite in the kernel), got {shape!r}.")
    return t


def _sizes(spatial: tuple, in_shape: tuple) -> tuple[int, ...]:
    return tuple(n if t == -1 else t for t, n in zip(spatial, in_shape[2:]))


class ImageResizeModule(nn.Module):
    """Resize the spatial axes of (N, C, *S) exactly as ``jax.image.resize``."""

    def __init__(self, shape: tuple, method: str, antialias: bool):
        super().__init__()
        self.shape, self.method, self.antialias = shape, method, antialias

    def forward(self, x: Tensor) -> Tensor:
        check_spatial(tuple(x.shape), len(self.shape) - 2, "ImageResize")
        for i, n in enumerate(_sizes(self.shape[2:], tuple(x.shape))):
            x = resize_axis(x, 2 + i, n, self.method, self.antialias)
        return x

    def extra_repr(self) -> str:
        return f"shape={self.shape}, method={self.method!r}, antialias={self.antialias}"


class ImageResize(Layer):
    """Resize images (N, C, *S) to ``shape``, as ``neural_tangents.stax.ImageResize``.

    Args:
        shape: the output shape (N, C, *S') in PyTorch layout; -1 keeps an axis. The batch
            and channel entries must be -1; a spatial entry equal to the input's size is a
            no-op.
        method: ``"linear"`` (``"bilinear"``, ``"trilinear"``, ``"triangle"``),
            ``"nearest"``, ``"cubic"`` or ``"lanczos3"`` / ``"lanczos5"`` (or a
            ``jax.image.ResizeMethod``).  neural-tangents' ``kernel_fn`` supports only the
            first two; the others use the same linear-map rule.
        antialias: widen the interpolation kernel when downsampling (jax's default True).
        precision: accepted for neural-tangents compatibility and ignored (torch computes
            in the inputs' dtype).

    Kernel: ``K' = R K R^T`` per spatial axis pair, with R the resize matrix of
    ``jax.image.resize`` (:mod:`widelimit.kernels.rules.resize`).  Linear-type methods
    need the full spatial covariance; nearest (a selection) also works on the diagonal.
    """

    def __init__(self, shape: Sequence[int], method: str, antialias: bool = True,
                 precision=None):
        self.shape = _check_shape(shape)
        self.method = check_method(method)
        self.antialias = bool(antialias)
        self.precision = precision
        self.needs_full_spatial = (self.method != "nearest"
                                   and any(t != -1 for t in self.shape[2:]))

    def apply_kernel(self, k: Kernel) -> Kernel:
        check_spatial(k.shape1, len(self.shape) - 2, "ImageResize")
        if k.mask1 is not None or k.mask2 is not None:
            raise mask_unsupported("ImageResize")
        return resize_rule(k, _sizes(self.shape[2:], k.shape1), self.method, self.antialias)

    def build(self) -> nn.Module:
        return ImageResizeModule(self.shape, self.method, self.antialias)

    def __repr__(self) -> str:
        return f"ImageResize({self.shape}, {self.method!r}, antialias={self.antialias})"
