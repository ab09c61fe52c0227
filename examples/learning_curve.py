"""Eigenlearning on digits: KRR learning curves predicted from the kernel's eigenstructure.

The operator eigenvalues and the labels' eigen-coefficients are estimated from the NTK and
the NNGP of a 2-hidden-layer ReLU network on all 1797 digits
(``wl.analysis.predict_learning_curve``); eigenlearning's predicted test MSE at each
training-set size is compared with KRR measured on random subsets (5 seeds, 500 held-out
points). Saves ``OUT_DIR/learning_curve.png``.

``run(out_dir)`` returns the numbers; ``python examples/learning_curve.py [OUT_DIR]`` prints them.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import widelimit as wl  # noqa: E402
from widelimit import layers as L  # noqa: E402

NS = (10, 20, 50, 100, 200, 400, 800)


def load():
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0)
    x = x - x.mean(0)
    x = x / x.norm(dim=1, keepdim=True) * np.sqrt(x.shape[1])     # inputs on the sphere
    return x, np.eye(10)[y] - 0.1


def run(out_dir: str = "out", ns=NS, ridge: float = 1e-2, seeds=range(5), n_test: int = 500,
        n_pool=None) -> dict:
    x, y = load()
    if n_pool is not None:
        x, y = x[:n_pool], y[:n_pool]
    net = L.serial(L.Dense(512, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(512, W_std=1.5, b_std=0.05),
                   L.Relu(), L.Dense(1, W_std=1.5))
    curves = {g: wl.analysis.predict_learning_curve(net.kernel_fn, x, y, ns, ridge=ridge, n_test=n_test,
                                                    seeds=seeds, get=g) for g in ("ntk", "nngp")}
    os.makedirs(out_dir, exist_ok=True)
    plot = os.path.join(out_dir, "learning_curve.png")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for (g, c), color in zip(curves.items(), ("C0", "C1")):
        ax.loglog(c.ns, c.predicted, "-", color=color, label=f"{g}: eigenlearning")
        ax.errorbar(c.ns, c.measured, yerr=c.measured_std, fmt="o", ms=3, color=color,
                    label=f"{g}: KRR measured")
    ax.set_xlabel("training samples n")
    ax.set_ylabel("test MSE")
    ax.set_title(f"digits, pool M = {len(x)}, ridge {ridge:g}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plot, dpi=80)
    plt.close(fig)
    return {g: {"ns": c.ns.tolist(), "predicted": c.predicted.tolist(), "measured": c.measured.tolist(),
                "relative_error": c.relative_error.tolist()} for g, c in curves.items()} | {"plot": plot}


if __name__ == "__main__":
    t0 = time.time()
    r = run(sys.argv[1] if len(sys.argv) > 1 else "out")
    for g in ("ntk", "nngp"):
        print(f"{g}: n / predicted / measured / relative error")
        for n, p, m, e in zip(r[g]["ns"], r[g]["predicted"], r[g]["measured"], r[g]["relative_error"]):
            print(f"  {n:5d}  {p:.5f}  {m:.5f}  {e:.3f}")
    print(f"plot: {r['plot']} ({time.time() - t0:.1f} s)")
