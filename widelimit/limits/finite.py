"""Finite-width counterparts of the limits: the muP linear network built with
:func:`widelimit.parametrize` and an SGD loop on the same batch schedule as the limits.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from widelimit.limits._common import batch_schedule, check_lr_steps, check_xy, diverged, mse, DivergenceError

__all__ = ["mup_linear_1lp", "train_sgd", "initial_gram"]


def mup_linear_1lp(d_in: int, d_out: int, width: int, base_width: int = 1, *, seed: int = 0,
                   dtype: torch.dtype = torch.float32, readout_zero_init: bool = False) -> nn.Sequential:
    """``nn.Sequential(Linear(d_in, width), Linear(width, d_out))`` without biases, PyTorch's
    default init drawn from ``seed`` (inside ``torch.random.fork_rng``: the global RNG is
    left as it was) and parametrized by ``wl.parametrize(..., scheme="mup")`` relative to
    ``base_width`` (``readout_zero_init``: the readout starts at 0, Tensor Programs V
    Sec. D.2; its limit has ``output_var=0``).  Train it with ``wl.optim.SGD(model, lr)``; its width -> infinity limit
    is ``wl.limits.MuPLimitLinear1LP(d_in, d_out, base_width=base_width)``.
    """
    from widelimit.parametrization import parametrize
    if not isinstance(width, int) or not isinstance(base_width, int) or not 1 <= base_width <= width:
        raise ValueError(f"need integers 1 <= base_width <= width, got base_width={base_width!r}, "
                         f"width={width!r}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(d_in, width, bias=False, dtype=dtype),
                              nn.Linear(width, d_out, bias=False, dtype=dtype))
    base = {"0.weight": (base_width, d_in), "1.weight": (d_out, base_width)}
    return parametrize(model, base=base, scheme="mup", readout_zero_init=readout_zero_init)


def initial_gram(model: nn.Sequential, base_width: int) -> Tensor:
    """``Z^T Z / n`` (float64) of a :func:`mup_linear_1lp` model's initial vectors,
    ``Z = [U_0, b V'_0^T]``: with it ``MuPLimitLinear1LP.fit(..., gram=...)`` reproduces
    this finite network's SGD trajectory exactly (see :mod:`widelimit.limits.linear`)."""
    u, v = model[0].weight.detach().double(), model[1].weight.detach().double()
    z = torch.cat([u, base_width * v.T], dim=1)
    return z.T @ z / u.shape[0]


def train_sgd(model: nn.Module, x: Any, y: Any, lr: float, steps: int,
              batch_size: Optional[int] = None, seed: int = 0,
              divergence_factor: float = 1e8) -> Tensor:
    """Train a parametrized ``model`` in place with ``wl.optim.SGD(model, lr)`` on
    ``||f - y||^2 / (2 B K)``, on the batches of
    :func:`~widelimit.limits._common.batch_schedule` (the same as the limits').

    Returns:
        float64 tensor (steps + 1,): the full training loss before each step and at the end.

    Raises:
        DivergenceError: the loss blew up.
    """
    from widelimit.optim import SGD
    first = next(model.parameters())
    xt, yt, _ = check_xy(x, y, first.shape[-1], _out_dim(model))
    bs = check_lr_steps(lr, steps, batch_size, xt.shape[0])
    xt, yt = xt.to(first.dtype), yt.to(first.dtype)
    opt = SGD(model, lr=float(lr))

    def full_loss() -> float:
        with torch.no_grad():
            return float(mse(model(xt), yt))

    losses = [full_loss()]
    for step, idx in enumerate(batch_schedule(xt.shape[0], steps, bs, seed), start=1):
        opt.zero_grad()
        mse(model(xt[idx]), yt[idx]).backward()
        opt.step()
        losses.append(full_loss())
        if diverged(losses[-1], losses[0], divergence_factor):
            raise DivergenceError(f"finite network diverged at lr={lr:g}, step {step} "
                                  f"(loss {losses[0]:.3g} -> {losses[-1]:.3g}); lower `lr`.",
                                  lr=float(lr), step=step, losses=losses)
    return torch.tensor(losses, dtype=torch.float64)


def _out_dim(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise TypeError("train_sgd needs a model whose last layer is an nn.Linear.")
    return last[-1].out_features
