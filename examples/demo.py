"""widelimit demo on the scikit-learn digits images (ships with scikit-learn, no download).

1. Analytic NNGP and NTK of a ReLU network against Monte Carlo estimates from real
   finite networks of growing width: a table, and out/mc_error_vs_width.png showing the
   relative error falling like 1/sqrt(width).
2. Closed-form training dynamics (examples/demo_training.py): infinite-width NNGP/NTK
   classification at t = inf and along training time, and finite networks of growing
   width trained by gradient descent approaching the closed-form NTK prediction
   (out/demo_training.png).

    make demo            # or: .venv/bin/python examples/demo.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import widelimit as wl  # noqa: E402
from widelimit import layers as L  # noqa: E402


def digits(n: int, seed: int = 0) -> np.ndarray:
    from sklearn.datasets import load_digits
    x = load_digits().data.astype(np.float64)
    rng = np.random.default_rng(seed)
    x = x[rng.choice(len(x), n, replace=False)]
    x -= x.mean(0)
    return x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(x.shape[1])   # unit variance per feature on average


def network(width: int = 512, readout: int = 10):
    return L.serial(L.Dense(width, W_std=1.5, b_std=0.05), L.Relu(),
                    L.Dense(width, W_std=1.5, b_std=0.05), L.Relu(),
                    L.Dense(readout, W_std=1.5, b_std=0.05))


def monte_carlo_section(out_dir: str, quick: bool) -> list[dict]:
    from tqdm import tqdm
    x = digits(16 if quick else 32)
    # The kernels do not depend on the readout size; a wide readout (1024 outputs, cheap:
    # forward passes only) averages away the readout's own sampling noise in the NNGP
    # estimate, so its error shows the width dependence. The NTK uses the 10-way readout.
    nets = {"nngp": network(readout=1024), "ntk": network(readout=10)}
    exact = {k: net.kernel_fn(x, get=k) for k, net in nets.items()}
    widths = [32, 128, 512] if quick else [32, 64, 128, 256, 512, 1024]
    n_samples = 4
    rows = []
    for width in tqdm(widths, desc="Monte Carlo widths", unit="width"):
        t = time.perf_counter()
        err = {}
        for k, net in nets.items():
            mc = wl.monte_carlo_kernel_fn(net, n_samples, width=width, seed=1)(x, get=k)
            err[k] = float(np.linalg.norm(mc - exact[k]) / np.linalg.norm(exact[k]))
        rows.append({"width": width, "samples": n_samples, "seconds": time.perf_counter() - t, **err})
    print(f"\nAnalytic vs Monte Carlo kernels, 2-hidden-layer ReLU net, {len(x)} digits images (64 px)")
    print(f"{'width':>6} {'samples':>7} {'rel.err NNGP':>13} {'rel.err NTK':>12} {'seconds':>8}")
    for r in rows:
        print(f"{r['width']:>6} {r['samples']:>7} {r['nngp']:>13.4f} {r['ntk']:>12.4f} {r['seconds']:>8.2f}")
    for k in ("nngp", "ntk"):
        slope = np.polyfit(np.log([r["width"] for r in rows]), np.log([r[k] for r in rows]), 1)[0]
        print(f"log-log slope of the {k.upper()} error vs width: {slope:.2f} (theory: -0.5)")
    _plot(rows, os.path.join(out_dir, "mc_error_vs_width.png"))
    return rows


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    w = np.array([r["width"] for r in rows], float)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for k, m in (("nngp", "o"), ("ntk", "s")):
        ax.loglog(w, [r[k] for r in rows], m + "-", label=f"{k.upper()} (Monte Carlo vs analytic)")
    ax.loglog(w, rows[0]["ntk"] * np.sqrt(w[0] / w), "k--", lw=1, label=r"$\propto 1/\sqrt{\mathrm{width}}$")
    ax.set_xticks(w)
    ax.set_xticklabels([str(int(v)) for v in w])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("hidden width")
    ax.set_ylabel("relative Frobenius error")
    ax.set_title("Finite networks approach the infinite-width kernels")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--out", default="out")
    args = ap.parse_args()
    # The demo's matrices are small: one thread avoids OpenMP spin-waiting on a shared
    # 2-core machine (measured 10x slower with two busy threads).
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    monte_carlo_section(args.out, args.quick)
    import demo_training
    print("\nClosed-form training dynamics on digits")
    if args.quick:
        demo_training.report(demo_training.run(args.out, widths=(64, 256), steps=200))
    else:
        demo_training.report(demo_training.run(args.out))
    print(f"\ndemo finished in {time.perf_counter() - t0:.1f} s; outputs in {args.out}/")


if __name__ == "__main__":
    main()
