"""Per-parameter learning rates of an abc-parametrization for any optimiser.

The learning rate of each parameter is ``lr * n^{-c}`` with ``c`` from the
scheme's SGD or Adam column (Yang & Hu 2021, Sec. 3; Tensor Programs V,
Table 3 and Appendix B: SGD-like optimisers use the SGD column, optimisers
that normalise the gradient entrywise (Adam, AdamW, RMSprop, Adagrad, ...)
the Adam column).  Weight decay is scaled by the inverse factor so that the
decoupled decay ``lr * weight_decay`` is width independent (as in ``mup``).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from widelimit._validate import check_real
from widelimit.parametrization.parametrize import get_registry, index, lookup

__all__ = ["param_groups", "optimizer_kind", "SGD", "Adam", "AdamW"]

_ADAM_LIKE = ("Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta", "Rprop", "SparseAdam")
_SGD_LIKE = ("SGD", "ASGD")


def optimizer_kind(optimizer: str | type) -> str:
    """``"sgd"`` or ``"adam"`` for an optimiser name or class."""
    if not isinstance(optimizer, str) and not (isinstance(optimizer, type)
                                               and issubclass(optimizer, torch.optim.Optimizer)):
        raise TypeError(f"`optimizer` must be a name ('sgd', 'adam', 'adamw', ...) or a "
                        f"torch.optim.Optimizer subclass, got {optimizer!r}.")
    name = optimizer if isinstance(optimizer, str) else optimizer.__name__
    low = name.lower()
    if low in ("sgd", "adam"):
        return low
    if name in _SGD_LIKE or low in (n.lower() for n in _SGD_LIKE):
        return "sgd"
    if name in _ADAM_LIKE or low in (n.lower() for n in _ADAM_LIKE):
        return "adam"
    raise ValueError(
        f"cannot tell whether optimizer {optimizer!r} is SGD-like or Adam-like; pass "
        "optimizer='sgd' (updates proportional to the gradient) or optimizer='adam' "
        "(entrywise-normalised updates)"
    )


def _as_groups(params: nn.Module | Iterable[Any]) -> list[dict[str, Any]]:
    if isinstance(params, nn.Module):
        index(params)
        get_registry(params)
        return [{"params": list(params.parameters())}]
    if isinstance(params, torch.Tensor):
        raise TypeError("pass an iterable of parameters (e.g. model.parameters()) or the model, not one tensor")
    items = list(params)
    if not items:
        raise ValueError("optimizer got an empty parameter list")
    if all(isinstance(g, dict) for g in items):
        return [dict(g, params=list(g["params"])) for g in items]
    return [{"params": items}]


def param_groups(
    params: nn.Module | Iterable[Any],
    lr: float,
    optimizer: str | type = "adam",
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Split parameters into groups with scaled ``lr`` and ``weight_decay``.

    Args:
        params: a parametrized model, its ``parameters()``, or param-group
            dicts (a group's own ``lr`` / ``weight_decay`` override the
            defaults before scaling).
        lr: base learning rate (the one tuned on the base model).
        optimizer: ``"sgd"``, ``"adam"`` or an optimiser class.
        weight_decay: base weight decay.

    Returns:
        A list for ``torch.optim.<Optimizer>(groups, ...)``.  Each group also
        carries ``widelimit_lr_scale``.

    Raises:
        ValueError: a parameter was never parametrized.
    """
    kind = optimizer_kind(optimizer)
    check_real("lr", lr, min=0.0)
    check_real("weight_decay", weight_decay, min=0.0)
    out: list[dict[str, Any]] = []
    for i, group in enumerate(_as_groups(params)):
        base_lr = check_real(f"params[{i}]['lr']", group["lr"], min=0.0) if "lr" in group else lr
        base_wd = (check_real(f"params[{i}]['weight_decay']", group["weight_decay"], min=0.0)
                   if "weight_decay" in group else weight_decay)
        buckets: dict[float, dict[str, Any]] = {}
        for p in group["params"]:
            hit = lookup(p)
            if hit is None:
                raise ValueError(
                    f"a parameter of shape {tuple(p.shape)} was never parametrized; call "
                    "widelimit.parametrize(model, base=..., scheme=...) before building the "
                    "optimizer (after torch.load, pass the model itself: widelimit.optim.Adam(model, lr=...))"
                )
            reg, name = hit
            scale = reg.params[name].lr_scale(kind)
            if scale not in buckets:
                extra = {k: v for k, v in group.items() if k not in ("params", "lr", "weight_decay")}
                buckets[scale] = dict(extra, params=[], lr=base_lr * scale,
                                      weight_decay=base_wd / scale, widelimit_lr_scale=scale)
            buckets[scale]["params"].append(p)
        out.extend(buckets.values())
    return out


def SGD(params: nn.Module | Iterable[Any], lr: float, weight_decay: float = 0.0, **kwargs: Any) -> torch.optim.SGD:
    """``torch.optim.SGD`` with per-parameter abc learning rates (SGD column)."""
    return torch.optim.SGD(param_groups(params, lr, "sgd", weight_decay), lr=lr, **kwargs)


def Adam(params: nn.Module | Iterable[Any], lr: float = 1e-3, weight_decay: float = 0.0, **kwargs: Any) -> torch.optim.Adam:
    """``torch.optim.Adam`` with per-parameter abc learning rates (Adam column)."""
    return torch.optim.Adam(param_groups(params, lr, "adam", weight_decay), lr=lr, **kwargs)


def AdamW(params: nn.Module | Iterable[Any], lr: float = 1e-3, weight_decay: float = 1e-2, **kwargs: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` with per-parameter abc learning rates (Adam column)
    and weight decay scaled so that ``lr * weight_decay`` is width independent."""
    return torch.optim.AdamW(param_groups(params, lr, "adam", weight_decay), lr=lr, **kwargs)
