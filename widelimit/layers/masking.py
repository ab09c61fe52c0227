"""Masked inputs in the finite networks built by ``Layer.module()``.

The same rules as the kernels (:mod:`widelimit.kernels.masking`, after
neural-tangents' ``supports_masking``): a position mask (N, *S) (True = masked)
travels with the activations; every layer that mixes positions sees zeros at masked
positions; convolution / pooling windows are masked at their centre, global pooling
and Flatten mask an example when all its positions are; GlobalAvgPool averages over
unmasked positions and attention gives masked keys no weight.  The output of a call
with a mask is zero at the masked output positions (neural-tangents' ``unmask_fn``).

Usage: ``model(x, mask=m)`` or ``model(x, mask_constant=float("nan"))`` on the module
of a ``serial``; ``masked_call(module, x, mask=m)`` for the module of a single layer.
Module protocol:

* ``forward_masked(x, mask) -> (out, out_mask)`` where the module needs the mask;
* ``mask_pointwise = True`` for modules acting on each position separately (the mask
  passes unchanged); any other module refuses masks with a ValueError.
"""
from __future__ import annotations

from typing import Any, Optional

from torch import Tensor, nn

from widelimit.kernels.masking import apply_mask, entry_mask

__all__ = ["zero_masked", "forward_masked", "masked_call", "ZeroMaskedInput", "SerialModule"]


def zero_masked(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """``x`` (N, C, *S) (or (N, C) with a per-example mask (N,)) zeroed where masked."""
    if mask is None:
        return x
    return x.masked_fill(mask.unsqueeze(1), 0.0)


def mask_unsupported(who: str) -> NotImplementedError:
    """The one refusal of masked inputs by a layer whose rule has no masked form yet (its
    kernel rule and its finite module raise the same)."""
    return NotImplementedError(f"{who} does not support masked inputs (`mask` / `mask_constant`) "
                               f"yet; pass unmasked inputs.")


def forward_masked(m: nn.Module, x, mask):
    """``(m(x), output mask)`` with ``x`` carrying the position mask ``mask``."""
    if mask is None:
        return m(x), None
    if hasattr(m, "forward_masked"):
        return m.forward_masked(x, mask)
    if getattr(m, "mask_pointwise", False) or isinstance(m, (nn.Identity, nn.Dropout)):
        return m(x), mask
    raise ValueError(f"{type(m).__name__} does not support masked inputs (`mask` / "
                     f"`mask_constant`).")


def masked_call(m: nn.Module, x: Tensor, mask: Any = None,
                mask_constant: Optional[float] = None) -> Tensor:
    """``m(x)`` with ``mask`` (per entry, broadcastable, or per position (N, *S)) or
    ``mask_constant``: masked entries are zeroed first, the output is zero at masked
    output positions."""
    x, pos = apply_mask(x, entry_mask(x, mask, mask_constant, "x"), drop_empty=False)
    out, out_mask = forward_masked(m, x, pos)
    return zero_masked(out, out_mask)


class ZeroMaskedInput:
    """Mixin for modules that only need zeros at masked input positions; subclasses give
    ``mask_fn(mask) -> output mask``."""

    def mask_fn(self, mask: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_masked(self, x: Tensor, mask: Optional[Tensor]):
        out = self(zero_masked(x, mask))
        return out, None if mask is None else self.mask_fn(mask)


class SerialModule(nn.Sequential):
    """``nn.Sequential`` that also accepts ``mask=`` / ``mask_constant=`` (see module doc)."""

    def forward(self, x, mask: Any = None, mask_constant: Optional[float] = None):
        if mask is not None or mask_constant is not None:
            return masked_call(self, x, mask, mask_constant)
        return super().forward(x)

    def forward_masked(self, x, mask):
        for m in self:
            x, mask = forward_masked(m, x, mask)
        return x, mask
