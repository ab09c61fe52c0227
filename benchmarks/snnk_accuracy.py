"""Accuracy of random_features(method="snnk") vs "arccos" at equal F (docs/features.md), and the
check that the SNNK weight-side route phi^T C phi (exact PRF linearisation of exp, closed-form
C = E_w psi psi^T) does not converge for Gaussian weights.

    OMP_NUM_THREADS=1 python benchmarks/snnk_accuracy.py [--prf]
"""
import sys

import numpy as np
import torch

import widelimit as wl
from widelimit import layers as L


def _net(depth):
    hidden = []
    for i in range(depth):
        hidden += [L.Dense(64, W_std=1.2 + 0.1 * i, b_std=0.3), L.Relu()]
    return L.serial(*hidden, L.Dense(1, W_std=0.9, b_std=0.2))


def accuracy(seeds=30):
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    print("| depth, kernel | F | arccos | snnk |\n|---|---|---|---|")
    for depth in (1, 2):
        for get in ("nngp", "ntk"):
            net = _net(depth)
            K = net.kernel_fn(x, get=get)
            for F in (256, 1024):
                cells = []
                for method in ("arccos", "snnk"):
                    e = []
                    for s in range(seeds):
                        p = wl.random_features(net, F, get=get, method=method, seed=s)(x)
                        e.append(float(torch.linalg.norm(p @ p.T - K) / torch.linalg.norm(K)))
                    cells.append(f"{np.mean(e):.4f} +- {np.std(e) / np.sqrt(seeds):.4f}")
                print(f"| {depth}, {get} | {F} | {cells[0]} | {cells[1]} |", flush=True)


def prf(seeds=5):
    rng = np.random.default_rng(0)
    for D, ms in ((6, (256, 4096)), (16, (256, 4096)), (64, (256, 2048))):
        x = rng.standard_normal((8, D)) / np.sqrt(D) * 1.5
        K = np.exp(((x[:, None] + x[None]) ** 2).sum(-1) / 2)  # E_w exp(w.x) exp(w.y), w ~ N(0, I)
        for m in ms:
            errs = []
            for seed in range(seeds):
                G = np.random.default_rng(seed).standard_normal((m, D))
                phi = np.exp(x @ G.T - (x ** 2).sum(1, keepdims=True) / 2) / np.sqrt(m)
                sq = (G ** 2).sum(1)
                a2 = sq[:, None] + sq[None] + 2 * G @ G.T  # |g_j + g_k|^2
                C = 3.0 ** (-D / 2) * np.exp(a2 / 6) / m
                errs.append(np.linalg.norm(phi @ C @ phi.T - K) / np.linalg.norm(K))
            print(f"D={D:3d} M={m:5d} relative error {np.mean(errs):.3g}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    prf() if "--prf" in sys.argv else accuracy()
