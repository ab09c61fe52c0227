"""Image resizing kernels (``jax.image.resize`` / ``neural_tangents.stax.ImageResize``).

Resizing is linear and separable: along each spatial axis ``y = R x`` with a fixed
``R`` of shape (n_out, n_in), so the covariance of the resized pre-activations is

    K'[o, o'] = sum_{a, a'} R[o, a] R[o', a'] K[a, a']      (K' = R K R^T per axis pair)

and the NTK transforms the same way (R has no parameters).  ``R`` is the one of
``jax.image.resize`` with translation 0 and scale ``n_out / n_in``: the sample position of
output ``o`` is ``c = (o + 1/2) n_in / n_out - 1/2``, the weights are
``k((a - c) / max(n_in / n_out, 1))`` (the stretch only with ``antialias`` when
downsampling), normalised to sum to one per output and zero where ``c`` falls outside
``[-1/2, n_in - 1/2]``; ``k`` is the triangle (linear), the Keys cubic or a Lanczos
window.  Nearest picks input ``floor((o + 1/2) n_in / n_out)``, a selection, so it also
works on same-position (diagonal-spatial) kernels.  Axes whose size does not change
are left alone, as jax does.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from widelimit.kernels.rules.conv import spatial_map
from widelimit.kernels.rules.pool import map_kernel
from widelimit.kernels.state import Kernel

__all__ = ["RESIZE_METHODS", "check_method", "resize_matrix", "resize_axis", "resize_rule"]

#: accepted names (as ``jax.image.ResizeMethod.from_string``) -> canonical method
RESIZE_METHODS = {"nearest": "nearest", "linear": "linear", "bilinear": "linear",
                  "trilinear": "linear", "triangle": "linear", "cubic": "cubic",
                  "bicubic": "cubic", "tricubic": "cubic", "lanczos3": "lanczos3",
                  "lanczos5": "lanczos5"}


def check_method(method) -> str:
    name = getattr(method, "name", method)       # also a jax.image.ResizeMethod
    m = RESIZE_METHODS.get(str(name).lower())
    if m is None:
        raise ValueError(f"`method` must be one of {sorted(RESIZE_METHODS)}, got {method!r}.")
    return m


def _window(method: str, x: Tensor) -> Tensor:
    """The interpolation kernel at distances ``x >= 0``."""
    if method == "linear":
        return (1 - x).clamp_min(0)
    if method == "cubic":                         # Keys (1981), a = -1/2
        near = ((1.5 * x - 2.5) * x) * x + 1
        far = ((-0.5 * x + 2.5) * x - 4) * x + 2
        return torch.where(x >= 2, torch.zeros_like(x), torch.where(x >= 1, far, near))
    r = 3 if method == "lanczos3" else 5
    y = r * torch.sin(math.pi * x) * torch.sin(math.pi * x / r)
    out = torch.where(x > 1e-3, y / torch.where(x != 0, math.pi ** 2 * x * x, torch.ones_like(x)),
                      torch.ones_like(x))
    return torch.where(x > r, torch.zeros_like(x), out)


def resize_matrix(n_in: int, n_out: int, method: str, antialias: bool,
                  dtype=torch.float64, device=None) -> Tensor:
    """The (n_out, n_in) matrix of ``jax.image.resize`` along one axis (not for nearest)."""
    inv = n_in / n_out
    stretch = max(inv, 1.0) if antialias else 1.0
    c = (torch.arange(n_out, dtype=torch.float64) + 0.5) * inv - 0.5
    a = torch.arange(n_in, dtype=torch.float64)
    w = _window(method, (c[:, None] - a[None, :]).abs() / stretch)
    total = w.sum(1, keepdim=True)
    eps = 1000.0 * torch.finfo(torch.float32).eps
    w = torch.where(total.abs() > eps, w / torch.where(total != 0, total, 1.0), 0.0)
    inside = (c >= -0.5) & (c <= n_in - 0.5)
    return torch.where(inside[:, None], w, 0.0).to(dtype=dtype, device=device)


def resize_axis(x: Tensor, axis: int, n_out: int, method: str, antialias: bool) -> Tensor:
    """Resize ``x`` along ``axis`` to ``n_out`` positions."""
    n_in = x.shape[axis]
    if n_out == n_in:
        return x
    if method == "nearest":
        idx = (torch.arange(n_out, device=x.device) * 2 + 1) * n_in // (2 * n_out)
        return x.index_select(axis, idx)
    r = resize_matrix(n_in, n_out, method, antialias, x.dtype, x.device)
    return torch.movedim(torch.movedim(x, axis, -1) @ r.T, -1, axis)


def resize_rule(k: Kernel, sizes: Sequence[int], method: str, antialias: bool) -> Kernel:
    """Kernel after resizing spatial axis ``i`` to ``sizes[i]`` positions (module docstring)."""
    changed = any(n != m for n, m in zip(k.shape1[2:], sizes))
    if k.diagonal_spatial and changed and method != "nearest":
        raise ValueError(f"ImageResize with method {method!r} mixes positions and needs the full "
                         f"spatial covariance (diagonal_spatial=False).")

    def one(x, axis, i):
        return resize_axis(x, axis, sizes[i], method, antialias)

    def fn(mat, batch_ndim):
        return spatial_map(mat, batch_ndim, k.diagonal_spatial, one,
                           lambda x, a, i: one(one(x, a, i), a + 1, i))

    return map_kernel(k, fn, shape1=k.shape1[:2] + tuple(sizes),
                      shape2=k.shape2[:2] + tuple(sizes))
