"""Training-free architecture scores on digits: do NTK scores at initialisation rank
architectures like their accuracy after short training?

A small search space of MLPs (depth x width x activation) and CNNs (depth x channels) on
scikit-learn's 8x8 digits. For each: the empirical NTK's condition number, trace and
label-gradient alignment (LGA, Mok et al. 2022) on one batch at initialisation
(``wl.analysis.ntk_scores``), then the test accuracy after a short Adam run. Reports the
Kendall tau between each score and the accuracy (scipy.stats.kendalltau) and saves a
scatter plot to ``OUT_DIR/nas_scores.png``.

``run(out_dir)`` returns the numbers; ``python examples/nas_scores.py [OUT_DIR]`` prints them.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import widelimit as wl  # noqa: E402
from widelimit.scale.threads import single_thread  # noqa: E402


def load(n_train: int = 1000, seed: int = 0):
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(x))
    x, y = x[perm] / 16.0, y[perm]
    x = (x - x[:n_train].mean(0)) / (x[:n_train].std(0) + 1e-2)
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def mlp(depth: int, width: int, act: type) -> nn.Module:
    layers, d = [], 64
    for _ in range(depth):
        layers += [nn.Linear(d, width), act()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, 10))


class CNN(nn.Module):
    def __init__(self, depth: int, channels: int) -> None:
        super().__init__()
        convs, c = [], 1
        for _ in range(depth):
            convs += [nn.Conv2d(c, channels, 3, padding=1), nn.ReLU()]
            c = channels
        self.body = nn.Sequential(*convs)
        self.head = nn.Linear(channels * 16, 10)

    def forward(self, x):
        h = self.body(x.reshape(-1, 1, 8, 8))
        return self.head(nn.functional.avg_pool2d(h, 2).flatten(1))


def search_space():
    space = {}
    for depth in (1, 3):
        for width in (8, 32, 128):
            for act in (nn.ReLU, nn.Tanh):
                space[f"mlp-{depth}x{width}-{act.__name__.lower()}"] = lambda d=depth, w=width, a=act: mlp(d, w, a)
    for depth in (1, 2):
        for ch in (4, 16):
            space[f"cnn-{depth}x{ch}"] = lambda d=depth, c=ch: CNN(d, c)
    return space


def train(model: nn.Module, x, y, xt, yt, steps: int, lr: float = 3e-3, batch: int = 128, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((model(xt).argmax(1) == yt).float().mean())


def run(out_dir: str = "out", steps: int = 150, n_batch: int = 64, seed: int = 0, names=None) -> dict:
    from scipy.stats import kendalltau
    x, y, xt, yt = load()
    space = search_space()
    names = list(space) if names is None else list(names)
    rows = {}
    for i, name in enumerate(names):
        torch.manual_seed(seed + i)          # the example's own seeds (a script may set them)
        model = space[name]()
        s = wl.analysis.ntk_scores(model, x[:n_batch], y[:n_batch])
        with single_thread():                # tiny models: a second thread costs more than it gives
            acc = train(model, x, y, xt, yt, steps, seed=seed + i)
        rows[name] = {"accuracy": acc, "log10_condition_number": float(np.log10(s.condition_number)),
                      "log10_trace": float(np.log10(s.trace)), "lga": s.lga}
    acc = np.array([r["accuracy"] for r in rows.values()])
    taus = {}
    for key in ("log10_condition_number", "log10_trace", "lga"):
        tau = kendalltau([r[key] for r in rows.values()], acc)
        taus[key] = float(tau.statistic)
    plot = os.path.join(out_dir, "nas_scores.png")
    os.makedirs(out_dir, exist_ok=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.1))
    for ax, key in zip(axes, taus):
        ax.scatter([r[key] for r in rows.values()], acc, s=14)
        ax.set_xlabel(key.replace("_", " "))
        ax.set_title(f"Kendall tau = {taus[key]:+.2f}", fontsize=9)
    axes[0].set_ylabel(f"test accuracy after {steps} steps")
    fig.tight_layout()
    fig.savefig(plot, dpi=80)
    plt.close(fig)
    return {"architectures": rows, "kendall_tau": taus, "plot": plot}


if __name__ == "__main__":
    t0 = time.time()
    res = run(sys.argv[1] if len(sys.argv) > 1 else "out")
    for name, r in res["architectures"].items():
        print(f"{name:24s} acc {r['accuracy']:.3f}  log10 cond {r['log10_condition_number']:6.2f}  "
              f"log10 trace {r['log10_trace']:6.2f}  LGA {r['lga']:+.3f}")
    print("Kendall tau vs accuracy:", {k: round(v, 3) for k, v in res["kendall_tau"].items()})
    print(f"plot: {res['plot']}  ({time.time() - t0:.1f} s)")
