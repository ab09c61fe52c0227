"""GlobalSelfAttention (``neural_tangents.stax.GlobalSelfAttention``): linear scaling with
tied queries and keys, or the standard 1/sqrt(d) scaling with separate query weights."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from widelimit._tensors import check_positive
from widelimit.kernels.rules.attention import (MECHANISMS, apply_mechanism, attention_rule,
                                               factor_rows, factors_usable, positional_covariance)
from widelimit.kernels.state import Kernel
from widelimit.layers.base import Layer
from widelimit.layers.masking import zero_masked

__all__ = ["GlobalSelfAttention", "SelfAttentionModule"]

POS_EMB = ("NONE", "SUM", "CONCAT")


class SelfAttentionModule(LazyModuleMixin, nn.Module):
    """Finite multi-head self-attention over all positions of (N, C, *S) inputs.

    Linear scaling with tied queries and keys (as neural-tangents): G = phi(QK_std
    X Wk Wk^T X^T / (C n_key)); standard scaling: G = phi(QK_std X Wq Wk^T X^T /
    (C sqrt(n_key))); heads = G X Wv, output = OV_std heads Wo / sqrt(C n_val n_heads) +
    b_std b, with all weights ~ N(0, 1).  With a position mask (``forward_masked``,
    :mod:`widelimit.layers.masking`) masked positions are zero in the inputs and in the
    positional embeddings, and masked keys get no attention weight.
    """

    cls_to_become = None

    def __init__(self, layer: "GlobalSelfAttention"):
        super().__init__()
        self.cfg = layer
        self.query = None if layer.linear_scaling else UninitializedParameter()
        self.key = UninitializedParameter()
        self.value = UninitializedParameter()
        self.out = UninitializedParameter()
        self.bias = UninitializedParameter() if layer.b_std is not None else None
        self.pos_emb = UninitializedParameter() if layer.pos_emb_type != "NONE" else None

    def initialize_parameters(self, x: Tensor) -> None:
        if not self.has_uninitialized_params():
            return
        c, cfg = x.shape[1], self.cfg
        cp = c if cfg.n_chan_pos_emb is None else cfg.n_chan_pos_emb
        c_keys = c + (cp if cfg.pos_emb_type == "CONCAT" else 0)
        c_vals = c + (cp if cfg.pos_emb_type == "CONCAT" and cfg.val_pos_emb else 0)
        kw = dict(dtype=x.dtype, device=x.device)
        with torch.no_grad():
            self.key.materialize((cfg.n_heads, c_keys, cfg.n_chan_key), **kw)
            if self.query is not None:
                self.query.materialize((cfg.n_heads, c_keys, cfg.n_chan_key), **kw)
            self.value.materialize((cfg.n_heads, c_vals, cfg.n_chan_val), **kw)
            self.out.materialize((cfg.n_chan_val * cfg.n_heads, cfg.n_chan_out), **kw)
            if self.bias is not None:
                self.bias.materialize((cfg.n_chan_out,), **kw)
            if self.pos_emb is not None:
                self.pos_emb.materialize((cp,) + tuple(x.shape[2:]), **kw)
            for p in self.parameters():
                p.normal_()

    def forward(self, x: Tensor) -> Tensor:
        return self._attend(x, None)

    def forward_masked(self, x: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """Forward pass on inputs zeroed at the masked positions ``mask`` (N, *S)."""
        return self._attend(zero_masked(x, mask), mask), mask

    def _attend(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        cfg = self.cfg
        n, spatial = x.shape[0], tuple(x.shape[2:])
        tokens = x.flatten(2).transpose(1, 2)                                # (N, P, C)
        keys_masked = None if mask is None else mask.flatten(1)[None, :, None, :]   # (1,N,1,P)
        values_in = tokens
        if self.pos_emb is not None:
            pe = self.pos_emb.flatten(1).T                                    # (P, Cp)
            if cfg.pos_emb_decay_fn is not None:
                r = positional_covariance(spatial, cfg.pos_emb_p_norm, cfg.pos_emb_decay_fn, pe)
                pe = torch.linalg.cholesky(r) @ pe
            pe = (cfg.W_pos_emb_std * pe).expand(n, -1, -1)
            if mask is not None:
                pe = pe.masked_fill(mask.flatten(1)[:, :, None], 0.0)
            if cfg.pos_emb_type == "SUM":
                tokens = tokens + pe
            else:
                tokens = torch.cat([tokens, pe], -1)
            if cfg.val_pos_emb:
                values_in = tokens
        keys = torch.einsum("npc,hck->hnpk", tokens, self.key)
        queries = keys if self.query is None else torch.einsum("npc,hck->hnpk", tokens, self.query)
        vals = torch.einsum("npc,hck->hnpk", values_in, self.value)
        d = cfg.n_chan_key if self.query is None else math.sqrt(cfg.n_chan_key)
        g = queries @ keys.transpose(-1, -2) * (cfg.qk_std / (tokens.shape[-1] * d))
        g = apply_mechanism(g, cfg.attention_mechanism, keys_masked)
        heads = (g @ vals).permute(1, 2, 3, 0).reshape(n, tokens.shape[1], -1)   # (N, P, V H)
        out = heads @ self.out * (cfg.ov_std / math.sqrt(cfg.n_chan_val * cfg.n_heads *
                                                         values_in.shape[-1]))
        if self.bias is not None:
            out = out + cfg.b_std * self.bias
        return out.transpose(1, 2).reshape((n, cfg.n_chan_out) + spatial)


class GlobalSelfAttention(Layer):
    """Multi-head dot-product self-attention over all positions, in the infinite-width
    limit of Hron et al. 2020 (``neural_tangents.stax.GlobalSelfAttention``).

    Args:
        n_chan_out, n_chan_key, n_chan_val, n_heads: widths (irrelevant for the kernel).
        linear_scaling: True: logits scaled by 1/n_chan_key with tied query and key weights
            (deterministic attention weights in the limit, every mechanism); False: the
            standard 1/sqrt(n_chan_key) with separate query weights (Gaussian logits; a
            closed-form kernel only for ``"IDENTITY"``, NotImplementedError otherwise,
            as neural-tangents; the finite module works for every mechanism).
        W_key_std, W_value_std, W_query_std, W_out_std, b_std: weight scales.
        attention_mechanism: ``"SOFTMAX"``, ``"IDENTITY"``, ``"RELU"`` or ``"ABS"``.
        pos_emb_type: ``"NONE"``, ``"SUM"`` or ``"CONCAT"`` positional embeddings.
        pos_emb_p_norm, pos_emb_decay_fn: embedding covariance ``decay_fn(|p - p'|_p^p)``
            (None: independent embeddings per position).
        n_chan_pos_emb, W_pos_emb_std, val_pos_emb: as neural-tangents.
    """

    needs_full_spatial = True
    width_attr = "n_chan_out"

    def __init__(self, n_chan_out: int, n_chan_key: int, n_chan_val: int, n_heads: int,
                 linear_scaling: bool = True, W_key_std=1.0, W_value_std=1.0, W_query_std=1.0,
                 W_out_std=1.0, b_std=None, attention_mechanism: str = "SOFTMAX",
                 pos_emb_type: str = "NONE", pos_emb_p_norm: float = 2,
                 pos_emb_decay_fn: Optional[Callable] = None, n_chan_pos_emb: Optional[int] = None,
                 W_pos_emb_std=1.0, val_pos_emb: bool = False):
        for name, v in (("n_chan_out", n_chan_out), ("n_chan_key", n_chan_key),
                        ("n_chan_val", n_chan_val), ("n_heads", n_heads)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}.")
        for name, v in (("W_key_std", W_key_std), ("W_value_std", W_value_std),
                        ("W_query_std", W_query_std), ("W_out_std", W_out_std),
                        ("W_pos_emb_std", W_pos_emb_std)):
            check_positive(v, name)
        check_positive(b_std, "b_std", allow_zero=True, allow_none=True)
        mech = str(attention_mechanism).upper()
        if mech not in MECHANISMS:
            raise ValueError(f"`attention_mechanism` must be one of {tuple(MECHANISMS)}, got "
                             f"{attention_mechanism!r}.")
        pe = str(pos_emb_type).upper()
        if pe not in POS_EMB:
            raise ValueError(f"`pos_emb_type` must be one of {POS_EMB}, got {pos_emb_type!r}.")
        self.n_chan_out, self.n_chan_key, self.n_chan_val = n_chan_out, n_chan_key, n_chan_val
        self.n_heads, self.attention_mechanism, self.pos_emb_type = n_heads, mech, pe
        self.qk_std = float(W_query_std) * float(W_key_std)
        self.ov_std = float(W_out_std) * float(W_value_std)
        self.b_std = b_std
        self.pos_emb_p_norm, self.pos_emb_decay_fn = pos_emb_p_norm, pos_emb_decay_fn
        self.n_chan_pos_emb, self.W_pos_emb_std = n_chan_pos_emb, float(W_pos_emb_std)
        self.val_pos_emb = bool(val_pos_emb)
        self.linear_scaling = bool(linear_scaling)
        # linear scaling without positional embeddings: only the input factors are read
        self.reads_input_nngp = not (self.linear_scaling and pe == "NONE")

    def apply_kernel(self, k: Kernel) -> Kernel:
        return attention_rule(k, qk_var=self.qk_std, ov_std=self.ov_std, b_std=self.b_std,
                              mechanism=self.attention_mechanism, pos_emb=self.pos_emb_type,
                              p_norm=self.pos_emb_p_norm, decay_fn=self.pos_emb_decay_fn,
                              n_chan_pos_emb=self.n_chan_pos_emb, W_pos_emb_std=self.W_pos_emb_std,
                              val_pos_emb=self.val_pos_emb, n_chan_out=self.n_chan_out,
                              linear_scaling=self.linear_scaling)

    def factor_rows(self, k: Kernel) -> Optional[Tensor]:
        """(N, P, C) rows F with nngp' = F F^T + b_std^2 (flattened positions) when the
        input is x1 against itself given by its factors (``rules.attention.factor_rows``),
        else None."""
        if not (k.x1_is_x2 and factors_usable(k, self.linear_scaling, self.pos_emb_type)):
            return None
        return factor_rows(k, self.qk_std, self.ov_std, self.attention_mechanism)

    def build(self) -> nn.Module:
        return SelfAttentionModule(self)

    def __repr__(self) -> str:
        return (f"GlobalSelfAttention({self.n_chan_out}, {self.n_chan_key}, {self.n_chan_val}, "
                f"{self.n_heads}, mechanism={self.attention_mechanism!r}, "
                f"pos_emb_type={self.pos_emb_type!r}, linear_scaling={self.linear_scaling})")
