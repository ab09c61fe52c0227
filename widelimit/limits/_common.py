"""Shared pieces of the infinite-width training limits: input checks, the SGD batch
schedule, the squared loss and divergence detection.

Loss convention (the same as :mod:`widelimit.predict`): on a batch of B inputs with K
outputs, ``L = ||f(X_b) - Y_b||_F^2 / (2 B K)``.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from widelimit._tensors import as_input, check_positive

__all__ = ["DivergenceError", "check_xy", "check_x", "batch_schedule", "mse", "check_lr_steps"]


class DivergenceError(ValueError):
    """The training dynamics blew up at the given learning rate.

    Raised instead of returning NaN / inf outputs.  Attributes: ``lr``, ``step`` (the
    step at which the loss left the finite range or exceeded the divergence threshold)
    and ``losses`` (the loss curve up to that step, as a list of floats).
    """

    def __init__(self, message: str, *, lr: float, step: int, losses: list[float]) -> None:
        super().__init__(message)
        self.lr, self.step, self.losses = lr, step, losses


def check_x(x: Any, d_in: int, name: str = "x") -> tuple[Tensor, bool]:
    """``(float64 tensor (N, d_in), was_numpy)``; ValueError on a wrong feature dimension or
    non-finite entries, TypeError on non-float input."""
    t, was_numpy = as_input(x, name)
    if t.ndim != 2 or t.shape[1] != d_in:
        raise ValueError(f"`{name}` must have shape (N, {d_in}) (d_in={d_in} features), "
                         f"got shape {tuple(t.shape)}.")
    if t.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(t.shape)}); pass at least one input.")
    return t, was_numpy


def check_xy(x: Any, y: Any, d_in: int, d_out: int) -> tuple[Tensor, Tensor, bool]:
    """Training inputs (N, d_in) and targets (N, d_out) (or (N,) when ``d_out == 1``)."""
    xt, was_numpy = check_x(x, d_in)
    yt, _ = as_input(y, "y", min_ndim=1)
    if yt.ndim == 1 and d_out == 1:
        yt = yt.unsqueeze(-1)
    if yt.ndim != 2 or yt.shape != (xt.shape[0], d_out):
        raise ValueError(f"`y` must have shape ({xt.shape[0]}, {d_out}) (one row per input, "
                         f"d_out={d_out} outputs), got shape {tuple(yt.shape)}.")
    return xt, yt, was_numpy


def check_lr_steps(lr: Any, steps: Any, batch_size: Any, n: int) -> Optional[int]:
    """Validate ``lr > 0``, ``steps >= 0`` (int) and ``batch_size`` (None or 1..n)."""
    check_positive(lr, "lr")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"`steps` must be a non-negative integer, got {steps!r}.")
    if batch_size is None:
        return None
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= n:
        raise ValueError(f"`batch_size` must be None (full batch) or an integer in [1, {n}], "
                         f"got {batch_size!r}.")
    return batch_size


def batch_schedule(n: int, steps: int, batch_size: Optional[int], seed: int = 0) -> list[Tensor]:
    """Index sets of the ``steps`` SGD batches: the full batch each step when ``batch_size``
    is None, else epochs of a seeded random permutation (a private ``torch.Generator``;
    the global RNG is untouched) cut into consecutive batches (the last, short batch of an
    epoch is dropped).  A finite network and its limit trained on the same schedule see
    the same batches."""
    if batch_size is None or batch_size == n:
        full = torch.arange(n)
        return [full] * steps
    gen = torch.Generator().manual_seed(int(seed))
    per_epoch = n // batch_size
    out: list[Tensor] = []
    while len(out) < steps:
        perm = torch.randperm(n, generator=gen)
        out.extend(perm[i * batch_size:(i + 1) * batch_size] for i in range(per_epoch))
    return out[:steps]


def mse(f: Tensor, y: Tensor) -> Tensor:
    """``||f - y||^2 / (2 B K)``."""
    return (f - y).pow(2).sum() / (2 * y.numel())


def diverged(loss: float, reference: float, factor: float = 1e8) -> bool:
    """Non-finite loss, or a loss ``factor`` times above ``max(reference, 1)``."""
    return not (loss == loss and abs(loss) != float("inf")) or loss > factor * max(reference, 1.0)
