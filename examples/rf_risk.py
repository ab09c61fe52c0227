"""More is better: the test risk of random-feature regression on digits, predicted and measured.

Ridge regression on ``k`` random features ``g(x)`` of a 2-hidden-layer ReLU network's NNGP
(``wl.random_features(net, k, get="nngp")``, arc-cosine features with
``E[g(x) . g(x')] = K(x, x')``) is kernel regression with the random kernel ``G G^T``. The RF
eigenframework of Simon, Karkada, Ghosh & Belkin ("More is Better", ICLR 2024;
``wl.analysis.rf_eigenlearning``) predicts its test MSE from the eigenvalues of the limiting
kernel and the targets' eigen-coefficients. Here the 1797 digits are the population: the
eigenstructure is that of the NNGP Gram matrix on all of them (eigenvalues / M), a training
set is n points drawn from them with label noise, and the test MSE is the mean squared error
over all 1797 points and the 10 one-hot outputs plus the noise variance (what the
framework predicts). Measured over 6 feature seeds for each k; the limit k -> inf is
eigenlearning (``wl.analysis.eigenlearning``). Saves ``OUT_DIR/rf_risk.png``.

``run(out_dir)`` returns the numbers; ``python examples/rf_risk.py [OUT_DIR]`` prints them.
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

KS = (16, 64, 128, 200, 256, 1024, 4096)
NOISE = 0.1


def load(n_pool=None):
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0)
    x = x - x.mean(0)
    x = x / x.norm(dim=1, keepdim=True) * np.sqrt(x.shape[1])     # inputs on the sphere
    y = np.eye(10)[y] - 0.1
    return (x, y) if n_pool is None else (x[:n_pool], y[:n_pool])


def net():
    return L.serial(L.Dense(512, W_std=1.5, b_std=0.05), L.Relu(),
                    L.Dense(512, W_std=1.5, b_std=0.05), L.Relu())


def measured_risk(g: np.ndarray, y: np.ndarray, n: int, ridge: float, rng) -> float:
    """Test MSE (all pool points, mean over outputs, plus noise variance) of ridge regression
    ``min ||G a - y||^2 + ridge ||a||^2`` on n random pool points with label noise; the dual
    form ``a = G^T (G G^T + ridge)^-1 y`` when n < k."""
    tr = rng.choice(len(y), n, replace=False)
    gt, yt = g[tr], y[tr] + NOISE * rng.standard_normal((n, y.shape[1]))
    if n < g.shape[1]:
        a = gt.T @ np.linalg.solve(gt @ gt.T + ridge * np.eye(n), yt)
    else:
        a = np.linalg.solve(gt.T @ gt + ridge * np.eye(g.shape[1]), gt.T @ yt)
    return float(np.mean((g @ a - y) ** 2) + NOISE ** 2)


def run(out_dir: str = "out", ks=KS, n: int = 200, ridge: float = 1e-2, seeds=range(6),
        n_pool=None) -> dict:
    x, y = load(n_pool)
    m = len(x)
    arch = net()
    ev, u = np.linalg.eigh(arch.kernel_fn(x, get="nngp").numpy())
    lam = np.clip(ev[::-1], 0.0, None) / m
    v = wl.analysis.target_coefficients(u[:, ::-1], y)
    predicted, measured, spread = [], [], []
    for k in ks:
        predicted.append(float(wl.analysis.rf_eigenlearning(lam, v, n, k, ridge, NOISE).test_mse))
        errs = []
        for seed in seeds:
            g = wl.random_features(arch, int(k), get="nngp", seed=seed)(x).numpy()
            errs.append(measured_risk(g, y, n, ridge, np.random.default_rng(1000 + seed)))
        measured.append(float(np.mean(errs)))
        spread.append(float(np.std(errs) / np.sqrt(len(errs))))
    limit = float(wl.analysis.eigenlearning(lam, v, n, ridge, NOISE).test_mse)
    rel = [abs(p - q) / q for p, q in zip(predicted, measured)]

    os.makedirs(out_dir, exist_ok=True)
    plot = os.path.join(out_dir, "rf_risk.png")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    kk = np.logspace(np.log10(min(ks)), np.log10(max(ks)), 60)
    curve = [wl.analysis.rf_eigenlearning(lam, v, n, float(k), ridge, NOISE).test_mse for k in kk]
    ax.semilogx(kk, curve, "-", color="C0", label="RF eigenframework")
    ax.errorbar(ks, measured, yerr=spread, fmt="o", ms=4, color="C1", label="measured (arc-cosine RF)")
    ax.axhline(limit, ls="--", color="gray", lw=1, label="k = inf (eigenlearning)")
    ax.set_xlabel("random features k")
    ax.set_ylabel("test MSE")
    ax.set_title(f"digits NNGP, n = {n}, ridge {ridge:g}, M = {m}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plot, dpi=80)
    plt.close(fig)
    return {"ks": list(ks), "predicted": predicted, "measured": measured, "measured_sem": spread,
            "relative_error": rel, "infinite_features": limit, "n": n, "ridge": ridge, "plot": plot}


if __name__ == "__main__":
    t0 = time.time()
    r = run(sys.argv[1] if len(sys.argv) > 1 else "out")
    print(f"n = {r['n']}, ridge = {r['ridge']:g}; k / predicted / measured (+- sem) / relative error")
    for k, p, q, s, e in zip(r["ks"], r["predicted"], r["measured"], r["measured_sem"], r["relative_error"]):
        print(f"  {k:5d}  {p:.5f}  {q:.5f} +- {s:.5f}  {e:.3f}")
    print(f"  inf    {r['infinite_features']:.5f}")
    print(f"plot: {r['plot']} ({time.time() - t0:.1f} s)")
