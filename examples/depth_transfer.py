"""Learning-rate transfer across depth (Bordelon et al. 2023; Yang et al. 2023, TP VI).

Residual MLPs ``h^l = h^(l-1) + m_L W^l relu(h^(l-1))`` on scikit-learn's digits,
depths 2, 8, 32, trained with Adam over a log2 grid of learning rates:

* depth-muP: ``m_L = sqrt(L0 / L)`` and the Adam learning rate of the branch
  weights times ``sqrt(L0 / L)`` (``wl.parametrize(..., depth=L, base_depth=L0,
  residual_branches=...)`` + ``wl.optim.Adam``), L0 = 2;
* SP: ``m_L = 1``, one learning rate for everything.

Plots the training loss after the last step against the learning rate, one line
per depth, and prints the best learning rate per depth in both schemes.

    python examples/depth_transfer.py --threads 1           # ~85 s on one core
    python examples/depth_transfer.py --out depth.png --steps 100
"""
from __future__ import annotations

import argparse
import time
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import widelimit as wl


class ResMLP(nn.Module):
    """Linear embedding, ``depth`` blocks ``h + relu -> Linear``, linear readout."""

    def __init__(self, depth: int, width: int, d_in: int = 64, d_out: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.ReLU(), nn.Linear(width, width)) for _ in range(depth))
        self.head = nn.Linear(width, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for blk in self.blocks:
            h = h + blk(h)
        return self.head(h)


def digits(n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised digits images (64 pixels) and labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    return (x, y) if n is None else (x[:n], y[:n])


def final_loss(scheme: str, depth: int, lr: float, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor,
               width: int, base_depth: int, seed: int) -> float:
    """Training loss (on all of ``x``) after Adam steps on the minibatches ``order``."""
    torch.manual_seed(seed)
    model = ResMLP(depth, width)
    if scheme == "depth-mup":
        wl.parametrize(model, scheme="sp", depth=depth, base_depth=base_depth,
                       residual_branches=[f"blocks.{i}" for i in range(depth)])
    else:
        wl.parametrize(model, scheme="sp")
    opt = wl.optim.Adam(model, lr=lr)
    for idx in order:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y).item()
    return loss if np.isfinite(loss) else float("inf")


def sweep(depths: Sequence[int], grid: Sequence[float], steps: int = 150, batch: int = 64, width: int = 128,
          seeds: int = 2, n: int | None = None) -> dict[str, np.ndarray]:
    """``{scheme: losses of shape (len(depths), len(grid))}`` averaged over seeds."""
    x, y = digits(n)
    g = torch.Generator().manual_seed(0)
    order = torch.randint(0, len(x), (steps, batch), generator=g)
    out = {}
    for scheme in ("depth-mup", "sp"):
        res = np.zeros((len(depths), len(grid)))
        for i, d in enumerate(depths):
            for j, lr in enumerate(grid):
                res[i, j] = np.mean([final_loss(scheme, d, lr, x, y, order, width, depths[0], s)
                                     for s in range(seeds)])
        out[scheme] = res
    return out


def best_lrs(losses: np.ndarray, grid: Sequence[float]) -> list[float]:
    """Minimising learning rate per depth (rows of ``losses``)."""
    return [float(grid[int(np.argmin(row))]) for row in losses]


def plot(results: dict[str, np.ndarray], depths: Sequence[int], grid: Sequence[float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(depths)))
    for ax, (scheme, res) in zip(axes, results.items()):
        for c, d, row in zip(colors, depths, res):
            ax.plot(grid, np.minimum(row, 5.0), "o-", color=c, label=f"depth {d}", ms=3)
            k = int(np.argmin(row))
            ax.plot(grid[k], row[k], "*", color=c, ms=12)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("Adam learning rate")
        ax.set_title({"depth-mup": "depth-muP (branch x sqrt(L0/L))", "sp": "SP (no depth scaling)"}[scheme])
    axes[0].set_ylabel("training loss")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="depth_transfer.png")
    ap.add_argument("--depths", default="2,8,32")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--grid", default="-13,-2", help="log2 learning-rate range, inclusive (--grid=-13,-2)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is best on a busy CPU)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    depths = [int(d) for d in args.depths.split(",")]
    lo, hi = (int(k) for k in args.grid.split(","))
    grid = [2.0 ** k for k in range(lo, hi + 1)]
    t = time.time()
    res = sweep(depths, grid, steps=args.steps, seeds=args.seeds, width=args.width)
    best = {}
    for scheme, losses in res.items():
        best[scheme] = best_lrs(losses, grid)
        print(f"{scheme:>9}: best lr per depth " + ", ".join(
            f"L={d}: 2^{int(np.log2(b))} (loss {losses[i].min():.3f})"
            for i, (d, b) in enumerate(zip(depths, best[scheme]))))
    plot(res, depths, grid, args.out)
    print(f"saved {args.out} ({time.time() - t:.0f} s)")
    return {"losses": res, "best": best, "grid": grid, "depths": depths, "plot": args.out}


if __name__ == "__main__":
    main()
