"""Readout layer, muP attention scaling and depth multipliers.

* Readout: an ``nn.Linear`` for the width -> output map.  :func:`parametrize`
  recognises any linear layer with a width fan-in and a finite fan-out as an
  output layer and gives it the muP ``1/n`` multiplier (Tensor Programs V,
  Table 3), so a plain ``nn.Linear`` works too; ``Readout`` adds a tunable
  output multiplier and optional zero initialisation (TP V, Sec. D.2).
* Attention: muP uses ``q.k / d`` instead of ``q.k / sqrt(d)`` because after
  training ``q`` and ``k`` are correlated, so ``q.k`` grows like ``d``
  (TP V, Sec. 4 and Appendix D.3).
* Depth: residual branches multiplied by ``1/sqrt(L)`` (Bordelon et al. 2023,
  "Depthwise Hyperparameter Transfer in Residual Networks"; Yang et al. 2023,
  "Tensor Programs VI: Feature Learning in Infinite-Depth Neural Networks").
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from widelimit.parametrization.abc import ABC, get_scheme
from widelimit._validate import check_int, check_real

__all__ = ["Readout", "attention_scale", "attention", "depth_multiplier"]


class Readout(nn.Linear):
    """Output layer: ``Linear(output_mult * x)``.

    The width multiplier ``1/n`` is installed by :func:`widelimit.parametrize`
    (it is recorded in the model's registry, not in this module), so a
    ``Readout`` behaves like ``nn.Linear`` until the model is parametrized.

    Args:
        in_features, out_features, bias: as for ``nn.Linear``.
        output_mult: a width-independent multiplier (a muTransferable
            hyperparameter, TP V Table 2).
        readout_zero_init: initialise weight and bias to zero.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 output_mult: float = 1.0, readout_zero_init: bool = False,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        in_features = check_int("in_features", in_features, min=1, owner="Readout")
        out_features = check_int("out_features", out_features, min=1, owner="Readout")
        self.output_mult = check_real("output_mult", output_mult, owner="Readout")
        self.readout_zero_init = bool(readout_zero_init)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.readout_zero_init:
            with torch.no_grad():
                self.weight.zero_()
                if self.bias is not None:
                    self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output_mult != 1.0:
            x = x * self.output_mult
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", output_mult={self.output_mult}"


def attention_scale(d_head: int, scheme: str | ABC = "mup", base_d_head: int | None = None,
                    attn_mult: float = 1.0) -> float:
    """Scale of the attention logits ``scale * q.k``.

    SP / NTK: ``1/sqrt(d)``.  muP / mean-field: ``1/d`` (TP V, Eq. (4)); with
    ``base_d_head`` it is ``sqrt(d0)/d`` so that the base model keeps the usual
    ``1/sqrt(d0)``.  A custom abc scheme uses ``1/d`` if its hidden layers are
    muP-like (feature learning) and ``1/sqrt(d)`` otherwise.

    Raises:
        ValueError: non-positive head dimension.
    """
    check_int("d_head", d_head, min=1)
    check_real("attn_mult", attn_mult)
    sch = get_scheme(scheme)
    feature_learning = sch.name in ("mup", "mf") or (
        sch.name not in ("sp", "ntk") and sch.output.a + sch.output.b >= 1.0
    )
    if not feature_learning:
        return attn_mult / math.sqrt(d_head)
    if base_d_head is None:
        return attn_mult / d_head
    return attn_mult * math.sqrt(base_d_head) / d_head


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scheme: str | ABC = "mup",
              base_d_head: int | None = None, attn_mult: float = 1.0,
              attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
    """``scaled_dot_product_attention`` with the scale of :func:`attention_scale`.

    ``q, k, v`` have shape ``(..., seq, d_head)``.
    """
    scale = attention_scale(q.shape[-1], scheme, base_d_head, attn_mult)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)


def depth_multiplier(depth: int, base_depth: int = 1) -> float:
    """Residual-branch multiplier ``sqrt(base_depth / depth)`` (depth-muP)."""
    check_int("depth", depth, min=1)
    check_int("base_depth", base_depth, min=1)
    return math.sqrt(base_depth / depth)
