"""Small models shared by the parametrization tests."""
from __future__ import annotations

import torch
from torch import nn

import widelimit as wl


def mlp(width: int, d_in: int = 16, d_out: int = 4, depth: int = 3, bias: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, width, bias=bias), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width, bias=bias), nn.ReLU()]
    layers.append(nn.Linear(width, d_out, bias=bias))
    return nn.Sequential(*layers)


class Block(nn.Module):
    def __init__(self, d: int, n_heads: int, scheme: str, base_d_head: int | None) -> None:
        super().__init__()
        self.n_heads, self.scheme, self.base_d_head = n_heads, scheme, base_d_head
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        a = wl.parametrization.attention(q, k, v, scheme=self.scheme, base_d_head=self.base_d_head, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.ff(self.ln2(x))


class TinyTransformer(nn.Module):
    """Decoder-only transformer; ``readout`` is the class of the output layer."""

    def __init__(self, d: int, vocab: int = 16, n_heads: int = 2, n_layers: int = 2, seq: int = 8,
                 scheme: str = "mup", base_d_head: int | None = None, readout: type = nn.Linear) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, n_heads, scheme, base_d_head) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d)
        self.head = readout(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx) + self.pos(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


class ResMLP(nn.Module):
    """``h^l = h^(l-1) + branch_l(h^(l-1))``, ``branch_l = Linear(relu(.))``
    (Bordelon et al. 2023); branches are ``blocks.<l>``."""

    def __init__(self, depth: int, width: int = 64, d_in: int = 16, d_out: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.ReLU(), nn.Linear(width, width)) for _ in range(depth))
        self.head = nn.Linear(width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for blk in self.blocks:
            h = h + blk(h)
        return self.head(h)


def res_branches(depth: int) -> list[str]:
    return [f"blocks.{i}" for i in range(depth)]
