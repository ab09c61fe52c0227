"""Linearised and Taylor-expanded networks as trainable modules.

``linearize(model)`` is the first-order Taylor expansion in the parameters around their
initial values ``theta0``,

    f_lin(x; theta) = f(x; theta0) + J(x; theta0) (theta - theta0),

whose gradient-descent dynamics are those of kernel regression with the empirical NTK
(Lee et al., "Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
Descent", NeurIPS 2019). ``taylor_expand(model, degree)`` is

    f_d(x; theta) = sum_{k=0}^{d} (1/k!) D^k f(x; theta0)[delta, ..., delta],
    delta = theta - theta0,

with ``D^k f[delta^k]`` computed by ``k`` nested forward-mode products
(``torch.func.jvp``). The modules' parameters are a trainable copy of the model's,
initialised at ``theta0``; ``theta0`` is kept as buffers. Like the empirical kernels, the
expansion uses eval-mode semantics (batch norm running statistics, dropout off).

Degree >= 2 relies on torch's forward-over-forward AD; note that in torch 2.x the nested
jvp of ``layer_norm`` is wrong (checked against finite differences), so second and higher
order terms of models with ``nn.LayerNorm`` are unreliable. Degree 1 is exact.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

from torch import Tensor, nn
from torch.func import functional_call, jvp

from widelimit.empirical._model import eval_mode

__all__ = ["TaylorExpanded", "linearize", "taylor_expand"]

_Params = dict[str, Tensor]


def taylor_terms(f: Callable[[_Params], Tensor], theta0: _Params, delta: _Params,
                 degree: int) -> tuple[Tensor, ...]:
    """``(f(theta0), Df[delta], D^2 f[delta, delta], ..., D^degree f[delta^degree])``."""
    def nested(k: int) -> Callable[[_Params], tuple[Tensor, ...]]:
        if k == 0:
            return lambda p: (f(p),)
        inner = nested(k - 1)

        def g(p: _Params) -> tuple[Tensor, ...]:
            primal, tangent = jvp(inner, (p,), (delta,))
            return tuple(primal) + (tangent[-1],)
        return g

    return nested(degree)(theta0)


def _key(name: str) -> str:
    return "theta0__" + name.replace(".", "__")


class TaylorExpanded(nn.Module):
    """Taylor expansion of ``model`` to order ``degree`` in its parameters around theta0.

    ``self.model`` holds the trainable parameters ``theta`` (a copy of the original
    model's); ``forward(x, **kwargs)`` evaluates the expansion at ``theta``.
    """

    def __init__(self, model: nn.Module, degree: int) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
            raise ValueError(f"`degree` must be an int >= 0, got {degree!r}.")
        self.degree = degree
        self.model = copy.deepcopy(model)
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        if not self.names:
            raise ValueError("`model` has no trainable parameters (none with requires_grad=True) "
                             "to expand around.")
        for n, p in self.model.named_parameters():
            if n in self.names:
                self.register_buffer(_key(n), p.detach().clone())

    def theta0(self) -> _Params:
        return {n: getattr(self, _key(n)) for n in self.names}

    def forward(self, x: Tensor, **kwargs: Any) -> Tensor:
        named = dict(self.model.named_parameters())
        theta0 = self.theta0()
        delta = {n: named[n] - theta0[n] for n in self.names}
        frozen = {n: p for n, p in named.items() if n not in theta0}
        frozen.update(dict(self.model.named_buffers()))

        def f(th: _Params) -> Tensor:
            return functional_call(self.model, {**frozen, **th}, (x,), kwargs)

        with eval_mode(self.model):
            terms = taylor_terms(f, theta0, delta, self.degree)
        out = terms[0]
        for k in range(1, len(terms)):
            out = out + terms[k] / math.factorial(k)
        return out

    def extra_repr(self) -> str:
        return f"degree={self.degree}"


def linearize(model: nn.Module) -> TaylorExpanded:
    """``f(x; theta0) + J(x; theta0) (theta - theta0)`` as a trainable ``nn.Module``.

    Its parameters start at ``theta0`` (a copy of ``model``'s); train them with any torch
    optimizer. The original model is not modified.
    """
    return TaylorExpanded(model, 1)


def taylor_expand(model: nn.Module, degree: int) -> TaylorExpanded:
    """Order-``degree`` Taylor expansion of ``model`` in its parameters around theta0.

    ``sum_{k<=degree} D^k f(x; theta0)[theta - theta0]^k / k!`` via nested ``jvp``; a
    trainable ``nn.Module`` (``degree=1`` is :func:`linearize`).
    """
    return TaylorExpanded(model, degree)
