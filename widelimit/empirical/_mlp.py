"""Cotangents of a plain MLP without autograd's replicated backward pass.

For ``nn.Sequential`` of linear layers and elementwise activations on (N, D) inputs the
cotangents ``g_l = d f_o / d y_l`` of every linear layer's output ``y_l`` follow from the
chain rule in closed form (Novak et al. 2022, "Fast Finite Width Neural Tangent Kernel",
the structure of elementwise nonlinearities and dense layers):

    g_L[o] = e_o,      g_l[o] = (wm_{l+1} g_{l+1}[o] W_{l+1}) * phi_l'(z_l)

where ``phi_l'`` is the derivative of the activation between the two layers (one
forward-mode product with a vector of ones, so any elementwise torch activation works)
and ``wm`` the layer's weight multiplier (1 for ``nn.Linear``).  The forward pass runs
once on the N examples instead of once per output coordinate, and the readout layer's
cotangent is the identity (never multiplied).  :class:`~widelimit.empirical._structured.Structured`
uses this when :func:`mlp_chain` recognises the model and its generic probe-and-vjp
pass otherwise; both give the same ``(g, u)`` factors.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.func import jvp

__all__ = ["ELEMENTWISE", "mlp_chain", "mlp_cotangents"]

#: activations that act on each entry separately (Dropout is the identity in eval mode)
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.CELU,
               nn.SELU, nn.Softplus, nn.Mish, nn.Hardtanh, nn.Identity, nn.Dropout)


def mlp_chain(model: nn.Module, layers: list, others: list, out_shape: tuple,
              kwargs: dict) -> Optional[list]:
    """``[(module, structured layer or None), ...]`` when ``model`` is a plain MLP whose
    every linear layer is handled by the structured pass, else None."""
    if type(model) is not nn.Sequential or others or kwargs or len(out_shape) != 1:
        return None
    by_module = {id(l.module): l for l in layers}
    chain: list = []
    for m in model:
        layer = by_module.get(id(m))
        if layer is not None and layer.kind == "linear" and len(layer.y_shape) == 1:
            chain.append((m, layer))
        elif type(m) in ELEMENTWISE:
            chain.append((m, None))
        else:
            return None
    return chain if chain and chain[-1][1] is not None else None


def _affine(params: dict, m: nn.Module, layer) -> tuple[Tensor, Optional[Tensor], float, float]:
    pre = layer.name + "." if layer.name else ""
    w = params[pre + "weight"]
    b = params.get(pre + "bias") if m.bias is not None else None
    return (w, b, float(getattr(m, "weight_multiplier", 1.0)),
            float(getattr(m, "bias_multiplier", 1.0)))


def mlp_cotangents(mf: Any, chain: list, x: Tensor, out_size: int
                   ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(g, u)``: g[name] (O, N, C) cotangents of each linear layer's output, u[name]
    (N, D) its input, as :meth:`Structured._cotangents` returns them."""
    n = x.shape[0]
    params = {**mf.frozen, **mf.theta}
    h, acts, derivs = x, {}, []
    for m, layer in chain:
        if layer is None:
            h, d = jvp(m, (h,), (torch.ones_like(h),))
            derivs.append(d)
            continue
        acts[layer.name] = h
        w, b, wm, bm = _affine(params, m, layer)
        h = nn.functional.linear(h, w) * wm if wm != 1.0 else nn.functional.linear(h, w)
        if b is not None:
            h = h + (bm * b if bm != 1.0 else b)
    g: dict[str, Tensor] = {}
    cot = torch.eye(out_size, dtype=x.dtype, device=x.device).unsqueeze(1).expand(
        out_size, n, out_size)                                             # d f_o / d h
    first = next(layer.name for _, layer in chain if layer is not None)
    for m, layer in reversed(chain):
        if layer is None:
            cot = cot * derivs.pop()
            continue
        g[layer.name] = cot
        if layer.name == first:
            break
        w, _, wm, _ = _affine(params, m, layer)
        cot = cot @ w if wm == 1.0 else (cot @ w) * wm
    return g, acts
