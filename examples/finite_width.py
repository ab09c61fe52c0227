"""Finite-width NNGP: finite networks' output covariance against K_inf + K_1 / width.

A depth-3 ReLU MLP (``Dense(n, sqrt(2), 0.1)`` per layer, NTK parametrization) on 4 random
inputs in 6 dimensions. ``wl.limits.finite_width_nngp`` gives the infinite-width kernel K_inf
and the leading correction K_1 (Roberts, Yaida & Hanin 2022, ch. 4); real finite networks at
widths 32..1024 (``wl.limits.sample_output_gram``, control variates) measure
``E[f f^T] - K_inf``. The plot shows the gap |MC - K_inf| (Frobenius norm) against 1/width
with the prediction |K_1| / width, and n (MC - K_inf) per off-diagonal entry against K_1.
Saves ``OUT_DIR/finite_width.png`` (default docs/img).

``run(out_dir)`` returns the numbers; ``python examples/finite_width.py [OUT_DIR]`` prints them.
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from widelimit import layers as L  # noqa: E402
from widelimit.limits import finite_width_nngp, sample_output_gram  # noqa: E402

WIDTHS = (32, 64, 128, 256, 512, 1024)


def mlp(depth: int = 3, width: int = 64) -> L.Layer:
    body = [layer for _ in range(depth) for layer in (L.Dense(width, math.sqrt(2), 0.1), L.Relu())]
    return L.serial(*body, L.Dense(1, math.sqrt(2), 0.1))


def run(out_dir: str = os.path.join(os.path.dirname(__file__), "..", "docs", "img"),
        widths=WIDTHS, n_nets: int = 1024) -> dict:
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((4, 6)))
    net = mlp()
    k_inf, k_1 = finite_width_nngp(net, x)
    iu = tuple(torch.triu_indices(4, 4, 1))                       # the 6 input pairs
    res: dict = {"k_1": k_1, "gap": {}, "gap_se": {}, "explained": {}, "scaled": {}}
    for n in widths:
        s = max(128, n_nets * 128 // max(n, 128))                 # fewer nets at large widths
        g = sample_output_gram(net, x, s, n, seed=n, control_variates=True, batch=128)
        mean, se = g.mean(0), g.std(0) / math.sqrt(s)
        res["gap"][n] = float((mean - k_inf).norm())
        res["gap_se"][n] = float(se.norm())
        res["explained"][n] = 1 - float((mean - k_inf - k_1 / n).norm()) / res["gap"][n]
        res["scaled"][n] = ((mean - k_inf) * n)[iu], (se * n)[iu]
    res["plot"] = _plot(res, float(k_1.norm()), k_1[iu], widths, out_dir)
    return res


def _plot(res: dict, k1_norm: float, k1_off: torch.Tensor, widths, out_dir: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    inv = np.array([1 / n for n in widths])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.errorbar(inv, [res["gap"][n] for n in widths], yerr=[2 * res["gap_se"][n] for n in widths],
               fmt="o", label="finite nets: |MC - K_inf|")
    grid = np.linspace(0, inv.max() * 1.05, 50)
    a.plot(grid, k1_norm * grid, "-", label="prediction |K_1| / width")
    a.set_xlabel("1 / width")
    a.set_ylabel("Frobenius norm of the gap")
    a.set_title("gap to the infinite-width NNGP")
    a.legend()
    for j in range(len(k1_off)):
        ys = [float(res["scaled"][n][0][j]) for n in widths]
        es = [2 * float(res["scaled"][n][1][j]) for n in widths]
        line = b.errorbar(widths, ys, yerr=es, fmt="o")
        b.axhline(float(k1_off[j]), color=line[0].get_color(), ls="--", lw=1)
    b.set_xscale("log", base=2)
    b.set_xlabel("width n")
    b.set_ylabel("n (MC - K_inf), off-diagonal entries")
    b.set_title("measured (points, 2 SE) vs K_1 (dashed)")
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "finite_width.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    out = run(*(sys.argv[1:2]))
    for n in out["gap"]:
        print(f"width {n:5d}: |MC - K_inf| = {out['gap'][n]:.5f} +- {out['gap_se'][n]:.5f}, "
              f"explained by K_1/n: {out['explained'][n]:.3f}")
    print("K_1 =\n", out["k_1"].numpy().round(4))
    print("plot:", out["plot"])
