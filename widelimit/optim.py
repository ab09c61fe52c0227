"""Optimisers with abc (muP, NTK, ...) per-parameter learning rates.

``widelimit.optim.Adam(model.parameters(), lr=3e-3)`` after
``widelimit.parametrize(model, base=base, scheme="mup")``; for any other torch
optimiser use ``torch.optim.X(widelimit.param_groups(model, lr, optimizer=X))``.
See :mod:`widelimit.parametrization.optim`.
"""
from widelimit.parametrization.optim import SGD, Adam, AdamW, optimizer_kind, param_groups

__all__ = ["SGD", "Adam", "AdamW", "param_groups", "optimizer_kind"]
