"""Random-feature regression at large N (benchmarks/scale.py case, CONTRACTS.md).

Synthetic float32 inputs, d = 784, a one-hidden-layer ReLU NNGP (Dense-Relu-Dense with biases):
features phi = wl.random_features(net, F) written block by block into a float32 memmap, then
ridge regression in feature space (F x F normal equations accumulated over row blocks):
time of each phase and peak RSS. Default N = 200 000; ``--features-1m`` runs N = 1 000 000.
"""
from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

D = 784


def add_arguments(parser) -> None:
    parser.add_argument("--features-n", type=int, default=200_000, help="rows of the random-features case")
    parser.add_argument("--features-1m", action="store_true", help="run the N = 1 000 000 case")
    parser.add_argument("--features-f", type=int, default=4096, help="number of random features")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _inputs(n: int, block: int):
    """Synthetic rows x (N, 784) float32 in blocks (never all in memory) and targets."""
    for start in range(0, n, block):
        g = np.random.default_rng(start)
        x = g.standard_normal((min(block, n - start), D), dtype=np.float32)
        y = np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2]
        yield start, x, y.astype(np.float64)


def run_case(n: int, n_features: int, ridge: float = 1e-3, block: int = 8192) -> dict:
    import widelimit as wl
    L = wl.layers
    net = L.serial(L.Dense(1, W_std=1.4, b_std=0.1), L.Relu(), L.Dense(1, W_std=1.0, b_std=0.1))
    rf = wl.random_features(net, n_features, seed=0, block_size=block)
    with tempfile.TemporaryDirectory() as tmp:
        phi = np.lib.format.open_memmap(Path(tmp) / "phi.npy", mode="w+", dtype=np.float32,
                                        shape=(n, n_features))
        y_all = np.empty(n)
        t0 = time.perf_counter()
        for start, x, y in _inputs(n, block):
            rf(x, out=phi[start:start + len(x)])
            y_all[start:start + len(x)] = y
        t_feat = time.perf_counter() - t0
        gram = torch.zeros(n_features, n_features, dtype=torch.float64)
        rhs = torch.zeros(n_features, dtype=torch.float64)
        t0 = time.perf_counter()
        for start in range(0, n, block):
            p = torch.from_numpy(np.asarray(phi[start:start + block]))
            gram += (p.T @ p).double()
            rhs += p.double().T @ torch.from_numpy(y_all[start:start + block])
        gram.diagonal().add_(ridge)
        w = torch.linalg.solve(gram, rhs)
        t_fit = time.perf_counter() - t0
        resid = 0.0
        for start in range(0, n, block):
            p = torch.from_numpy(np.asarray(phi[start:start + block])).double()
            resid += float(((p @ w - torch.from_numpy(y_all[start:start + block])) ** 2).sum())
    return {"case": "random-features ridge", "n": n, "features": n_features, "d": D,
            "seconds": t_feat + t_fit, "features_s": t_feat, "fit_s": t_fit,
            "rows_per_s": n / t_feat, "train_mse": resid / n, "target_var": float(np.var(y_all)),
            "peak_rss_mb": _peak_rss_mb(), "phi_bytes": n * n_features * 4}


def run(args) -> list[dict]:
    n = 1_000_000 if getattr(args, "features_1m", False) else getattr(args, "features_n", 200_000)
    return [run_case(n, getattr(args, "features_f", 4096))]


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__)
    add_arguments(ap)
    for row in run(ap.parse_args()):
        print(row)
