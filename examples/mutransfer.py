"""muTransfer demo (Yang et al. 2022, "Tensor Programs V", Fig. 1).

Sweeps the Adam learning rate over a log2 grid for models of growing width,
under the standard parametrization (SP) and muP, and plots the final training
loss against the learning rate, one line per width:

* an MLP (2 hidden layers) on scikit-learn's digits, widths 64..2048;
* a small decoder-only transformer on a synthetic copy task (the second half
  of each sequence repeats the first, so attention is needed), widths 64..1024.

Under muP the curves of all widths share their minimiser (and wider is
better); under SP the optimum moves to smaller learning rates as width grows.

    python examples/mutransfer.py              # full sweep, several minutes on a CPU
    python examples/mutransfer.py --quick      # a smaller sweep, a few minutes
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import widelimit as wl


# ----------------------------------------------------------------------------- models
def make_mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, scheme: str, base_d_head: int) -> None:
        super().__init__()
        self.heads, self.scheme, self.base_d_head = heads, scheme, base_d_head
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(self.ln1(x)).split(d, -1))
        # muP: q.k / d instead of q.k / sqrt(d) (TP V, Sec. 4); SP keeps 1/sqrt(d)
        a = wl.parametrization.attention(q, k, v, scheme=self.scheme, base_d_head=self.base_d_head,
                                         is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.ff(self.ln2(x))


class Transformer(nn.Module):
    def __init__(self, d: int, scheme: str, vocab: int = 16, seq: int = 16, heads: int = 4,
                 layers: int = 2, base_d: int = 64) -> None:
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads, scheme, base_d // heads) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), wl.Readout(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx) + self.pos(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


# ----------------------------------------------------------------------------- data
def digits_batches(steps: int, batch: int, seed: int = 0):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor((x - x.mean(0)) / (x.std(0) + 1e-6), dtype=torch.float32)
    y = torch.tensor(y)
    g = torch.Generator().manual_seed(seed)
    order = torch.randint(0, len(x), (steps, batch), generator=g)
    return [(x[i], y[i]) for i in order], (x[:512], y[:512])


def copy_batches(steps: int, batch: int, seed: int = 0, vocab: int = 16, seq: int = 16):
    g = torch.Generator().manual_seed(seed)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        half = torch.randint(0, vocab, (n, seq // 2), generator=g)
        s = torch.cat([half, half], 1)
        return s[:, :-1], s[:, 1:]

    return [sample(batch) for _ in range(steps)], sample(256)


def seq_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    h = y.shape[1] // 2  # score only the copied half
    return F.cross_entropy(out[:, h:].reshape(-1, out.shape[-1]), y[:, h:].reshape(-1))


def cls_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y)


# ----------------------------------------------------------------------------- sweep
def final_loss(make, scheme: str, width: int, base_width: int, lr: float, batches, probe, loss_fn) -> float:
    torch.manual_seed(1)
    base = make(base_width, scheme)
    torch.manual_seed(0)
    model = wl.parametrize(make(width, scheme), base=base, scheme=scheme)
    opt = wl.optim.Adam(model.parameters(), lr=lr)
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        if not torch.isfinite(loss):
            return float("nan")
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(loss_fn(model(probe[0]), probe[1]))


def sweep(name: str, make, widths, grid, batches, probe, loss_fn) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for scheme in ("sp", "mup"):
        table = np.full((len(widths), len(grid)), np.nan)
        for i, w in enumerate(widths):
            t0 = time.time()
            table[i] = [final_loss(make, scheme, w, widths[0], lr, batches, probe, loss_fn) for lr in grid]
            best = int(np.log2(grid[int(np.nanargmin(table[i]))]))
            print(f"{name:11s} {scheme:3s} width {w:5d}: best lr 2^{best:<4d} "
                  f"loss {np.nanmin(table[i]):.3f}  ({time.time() - t0:.1f}s)", flush=True)
        out[scheme] = table
    return out


def plot(results: dict, widths: dict, grid, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(10, 3.8 * len(results)), squeeze=False)
    for r, (task, tables) in enumerate(results.items()):
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(widths[task])))
        for c, scheme in enumerate(("sp", "mup")):
            ax = axes[r][c]
            for i, w in enumerate(widths[task]):
                ax.plot(np.log2(grid), tables[scheme][i], "o-", ms=3, color=colors[i], label=f"width {w}")
            finite = tables[scheme][np.isfinite(tables[scheme])]
            ax.set_yscale("log")
            ax.set_ylim(max(0.8 * finite.min(), 1e-3), min(finite.max(), 5 * np.median(finite)) * 1.2)
            ax.set_title(f"{task}: {scheme.upper()}")
            ax.set_xlabel("log2 learning rate (Adam)")
            ax.set_ylabel("loss")
        axes[r][1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"saved {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer widths and steps")
    ap.add_argument("--out", default="mutransfer.png")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is best on a busy CPU)")
    ap.add_argument("--tf-widths", default=None, help="comma-separated transformer widths, e.g. 64,256,1024")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        mlp_w, tf_w, steps, tf_steps = [64, 256, 1024], [64, 128], 60, 40
        grid = [2.0 ** k for k in range(-12, -2)]
    else:
        mlp_w, tf_w, steps, tf_steps = [64, 128, 256, 512, 1024, 2048], [64, 128, 256, 512], 200, 100
        grid = [2.0 ** k for k in range(-14, 0)]
    if args.tf_widths:
        tf_w = [int(w) for w in args.tf_widths.split(",")]
    results, widths = {}, {"digits MLP": mlp_w, "transformer": tf_w}
    b, p = digits_batches(steps, 32)
    results["digits MLP"] = sweep("digits MLP", lambda w, s: make_mlp(w), mlp_w, grid, b, p, cls_loss)
    b, p = copy_batches(tf_steps, 32, vocab=64, seq=32)
    results["transformer"] = sweep("transformer", lambda w, s: Transformer(w, s, vocab=64, seq=32), tf_w, grid, b, p, seq_loss)
    plot(results, widths, grid, args.out)


if __name__ == "__main__":
    main()
