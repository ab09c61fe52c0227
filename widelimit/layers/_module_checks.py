"""Input checks of the finite modules built by :meth:`widelimit.layers.base.Layer.module`.

A forward pre-hook on the returned module refuses, with a message naming the shapes,
inputs that are not tensors, have no features, or (when the module was built for an
``input_shape``) differ from it in the number of axes or channels -- instead of a
``ZeroDivisionError`` in a lazy initialisation or torch's matmul message deep inside.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Optional, Sequence

from torch import Tensor, nn

from widelimit._validate import check_int

__all__ = ["check_input_shape", "install_input_check"]


def check_input_shape(input_shape: Any) -> Optional[tuple[int, ...]]:
    """``input_shape`` (per example, without the batch axis) as a tuple of positive ints."""
    if input_shape is None:
        return None
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(f"`input_shape` must be a tuple of positive integers (no batch axis), "
                        f"got {input_shape!r}.")
    return tuple(check_int(f"input_shape[{i}]", n, min=1) for i, n in enumerate(input_shape))


def _pre_hook(input_shape: Optional[tuple[int, ...]], module: nn.Module, args: tuple) -> None:
    if not args or not isinstance(args[0], Tensor):
        return          # branching modules take tuples of tensors: their layers check them
    x = args[0]
    if x.ndim < 2 or math.prod(x.shape[1:]) == 0:
        raise ValueError(f"the module needs inputs (N, features...) with at least one feature, "
                         f"got shape {tuple(x.shape)}.")
    if input_shape is not None and (x.ndim != len(input_shape) + 1 or x.shape[1] != input_shape[0]):
        raise ValueError(f"this module was built for inputs of shape (N, {', '.join(map(str, input_shape))}) "
                         f"(`input_shape`={input_shape}); got {tuple(x.shape)}: the number of axes and "
                         f"of channels must match. Build another with net.module(input_shape=...).")


def install_input_check(module: nn.Module, input_shape: Optional[tuple[int, ...]]) -> nn.Module:
    module.register_forward_pre_hook(functools.partial(_pre_hook, input_shape))
    return module
