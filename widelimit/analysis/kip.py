"""Kernel Inducing Points: dataset distillation through an analytic kernel.

Nguyen, Chen & Lee, "Dataset Meta-Learning from Kernel Ridge-Regression" (ICLR 2021).
A support set ``(X_s, Y_s)`` of a few points is learned so that kernel ridge regression
*from the support set* fits the training data: with a target batch ``(X_t, Y_t)``,

    ``loss(X_s) = ||Y_t - K(X_t, X_s) (K(X_s, X_s) + r I)^-1 Y_s||^2 / (2 |t|)``,
    ``r = ridge * tr K(X_s, X_s) / |s|``,

minimised by Adam on ``X_s`` (and optionally ``Y_s``), the gradient flowing through the
analytic kernel (widelimit's ``net.kernel_fn`` is differentiable in its inputs).
Targets are one-hot labels minus ``1 / K`` (zero mean over classes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from widelimit._tensors import as_input, check_positive
from widelimit.analysis._checks import as_count

__all__ = ["KIPResult", "kip", "krr_predict", "class_targets"]


@dataclass(frozen=True)
class KIPResult:
    """A learned support set.

    Attributes:
        x_support: ``(n_classes * n_support_per_class, ...)`` learned inputs (detached).
        y_support: matching targets (learned when ``learn_labels``, else the one-hot rows).
        labels: ``(n_support,)`` class of each support point at initialisation.
        losses: ``(steps,)`` the objective at each step (on that step's target batch).
        init_indices: indices into ``x_train`` of the initial support points.
    """
    x_support: Tensor
    y_support: Tensor
    labels: Tensor
    losses: np.ndarray
    init_indices: Tensor


def _call(kernel_fn: Callable[..., Any], a: Tensor, b: Tensor, get: Optional[str]) -> Tensor:
    k = kernel_fn(a, b) if get is None else kernel_fn(a, b, get=get)
    if not isinstance(k, Tensor) or k.shape != (a.shape[0], b.shape[0]):
        raise ValueError(f"`kernel_fn` must return a ({a.shape[0]}, {b.shape[0]}) tensor, got "
                         f"{type(k).__name__} {tuple(getattr(k, 'shape', ()))} (pass `get=` for a "
                         f"widelimit kernel_fn).")
    return k


def class_targets(labels: Tensor, n_classes: int, dtype: torch.dtype) -> Tensor:
    """One-hot rows minus ``1 / n_classes``."""
    return torch.nn.functional.one_hot(labels, n_classes).to(dtype) - 1.0 / n_classes


def krr_predict(kernel_fn: Callable[..., Any], x_support: Tensor, y_support: Tensor, x: Tensor, *,
                ridge: float = 1e-6, get: Optional[str] = None) -> Tensor:
    """``K(x, X_s) (K(X_s, X_s) + r I)^-1 Y_s`` with ``r = ridge * tr K(X_s, X_s) / |s|``."""
    kss = _call(kernel_fn, x_support, x_support, get)
    reg = ridge * torch.diagonal(kss).mean()
    a = torch.linalg.solve(kss + reg * torch.eye(kss.shape[0], dtype=kss.dtype, device=kss.device), y_support)
    return _call(kernel_fn, x, x_support, get) @ a


def _labels(y: Any, n: int) -> tuple[Tensor, int]:
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if not isinstance(y, Tensor):
        raise TypeError(f"`y_train` must be a tensor or array, got {type(y).__name__}.")
    if y.shape[0] != n:
        raise ValueError(f"`y_train` has {y.shape[0]} rows for {n} training points.")
    if y.ndim == 2:
        return y.argmax(1), y.shape[1]
    if y.ndim != 1 or y.is_floating_point():
        raise ValueError("`y_train` must be (N,) integer class labels or (N, K) one-hot rows.")
    if y.numel() and int(y.min()) < 0:
        raise ValueError("class labels in `y_train` must be >= 0.")
    return y.long(), int(y.max()) + 1


def kip(kernel_fn: Callable[..., Any], x_train: Any, y_train: Any, n_support_per_class: int,
        steps: int = 100, lr: float = 0.01, *, batch_size: Optional[int] = None, ridge: float = 1e-6,
        learn_labels: bool = False, get: Optional[str] = None, seed: int = 0) -> KIPResult:
    """Learn a support set of ``n_support_per_class`` points per class by KIP (module docstring).

    Args:
        kernel_fn: ``kernel_fn(x1, x2)`` -> (N1, N2) tensor, differentiable in ``x1``, ``x2``
            (e.g. ``net.kernel_fn`` with ``get="ntk"`` or ``"nngp"``).
        x_train: ``(N, ...)`` float inputs; y_train: ``(N,)`` class labels or ``(N, K)`` one-hot.
        n_support_per_class: support points per class, initialised to random training
            points of that class.
        steps: Adam steps; lr: its learning rate.
        batch_size: target points per step, sampled from the training set (``None``: all of
            it, every step; deterministic descent).
        ridge: KRR regulariser relative to the mean of the support kernel's diagonal.
        learn_labels: also learn the support targets.
        seed: seed of the sampling generator (the global RNG is untouched).
    """
    if not callable(kernel_fn):
        raise TypeError(f"`kernel_fn` must be callable, got {type(kernel_fn).__name__}.")
    x, _ = as_input(x_train, "x_train")
    n = x.shape[0]
    if n == 0:
        raise ValueError("`x_train` is empty.")
    labels, n_classes = _labels(y_train, n)
    per = as_count(n_support_per_class, "n_support_per_class")
    steps = as_count(steps, "steps")
    check_positive(lr, "lr")
    check_positive(ridge, "ridge")
    batch = n if batch_size is None else as_count(batch_size, "batch_size")
    gen = torch.Generator().manual_seed(int(seed))
    idx = []
    for c in range(n_classes):
        members = torch.nonzero(labels == c).flatten()
        if members.numel() < per:
            raise ValueError(f"class {c} has {members.numel()} training points, fewer than "
                             f"n_support_per_class = {per}.")
        idx.append(members[torch.randperm(members.numel(), generator=gen)[:per]])
    init = torch.cat(idx)
    y_all = class_targets(labels, n_classes, x.dtype)
    xs = x[init].detach().clone().requires_grad_(True)
    ys = y_all[init].detach().clone().requires_grad_(learn_labels)
    opt = torch.optim.Adam([xs, ys] if learn_labels else [xs], lr=lr)
    losses = np.empty(steps)
    for step in range(steps):
        t = torch.arange(n) if batch >= n else torch.randperm(n, generator=gen)[:batch]
        pred = krr_predict(kernel_fn, xs, ys, x[t], ridge=ridge, get=get)
        loss = ((pred - y_all[t]) ** 2).sum() / (2 * len(t))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses[step] = float(loss.detach())
    return KIPResult(x_support=xs.detach(), y_support=ys.detach(), labels=labels[init],
                     losses=losses, init_indices=init)
