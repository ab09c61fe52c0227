"""Finite muP networks approach the infinite-width feature-learning limit (Yang & Hu 2021).

A one-hidden-layer linear network ``f(x) = V U x`` on scikit-learn's digits (64 pixels,
10 classes, one-hot targets centred and scaled by ``--target-scale``), built with
``wl.parametrize(..., scheme="mup")`` relative to base width 64 and trained by gradient
descent with ``wl.optim.SGD``, at widths 64..8192 (several seeds each), next to

* ``wl.limits.MuPLimitLinear1LP``: the exact infinite-width limit of the same training
  (deterministic: its output at initialisation is 0);
* ``wl.limits.NTKLimit``: the lazy limit, an NTK-parametrized net whose NTK equals the
  muP limit's initial tangent kernel, trained by gradient flow at time ``lr * steps``.
  Both limits take the same first step; afterwards the muP limit's feature kernel (and
  with it its effective tangent kernel) grows along the directions it has learned, so it
  trains faster.  (A linear network can only learn a linear map, so feature learning
  changes the path and the speed, not the function class: test accuracies end up close.)

Prints per width the final training loss, the test accuracy and the distance of the test
outputs to the limit's (which falls like width^{-1/2}), and plots the loss curves
(``out/feature_learning_limit.png``: one line per width, the limit dashed, NTK dotted).

    python examples/feature_learning_limit.py            # ~20-60 s on 2 cores
    python examples/feature_learning_limit.py --quick    # widths 64..1024, 1 seed
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import widelimit as wl
from widelimit import layers as L
from widelimit.predict import max_learning_rate


def load(n_train: int, target_scale: float, seed: int = 0):
    from sklearn.datasets import load_digits
    x, labels = load_digits(return_X_y=True)
    x = x / 16.0
    x = (x - x.mean(0)) / np.clip(x.std(0), 0.1, None)          # standardised pixels
    y = target_scale * (np.eye(10)[labels] - 0.1)                 # centred one-hot
    perm = np.random.default_rng(seed).permutation(len(x))
    tr, te = perm[:n_train], perm[n_train:]
    t = lambda a: torch.tensor(a, dtype=torch.float64)          # noqa: E731
    return t(x[tr]), t(y[tr]), t(x[te]), torch.tensor(labels[te])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024, 4096, 8192])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--target-scale", type=float, default=10.0)
    ap.add_argument("--lr-frac", type=float, default=0.1,
                    help="learning rate as a fraction of the kernel regime's stability bound")
    ap.add_argument("--batch-size", type=int, default=None, help="minibatch SGD (default: full batch)")
    ap.add_argument("--out", default="out")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.widths, args.seeds = [64, 256, 1024], 1
    base = 64
    x, y, xt, lt = load(args.n_train, args.target_scale)
    d, k = x.shape[1], y.shape[1]
    acc = lambda f: float((f.argmax(1) == lt).double().mean())   # noqa: E731

    t0 = time.perf_counter()
    lim = wl.limits.MuPLimitLinear1LP(d, k, base_width=base)
    n_b = x.shape[0] if args.batch_size is None else args.batch_size
    lr = args.lr_frac * max_learning_rate(lim.initial_ntk(x[:n_b]), n_b * k)
    lim.fit(x, y, lr, args.steps, batch_size=args.batch_size)
    f_lim = lim.predict(xt)
    k0 = lim.variances[0] * x @ x.T
    moved = float((lim.feature_kernel(x) - k0).norm() / k0.norm())
    # the lazy limit with the same initial tangent kernel c x.x' (NTK of Dense-Dense: 2 s^2 x.x'/d)
    c = float(lim.initial_ntk(x[:1])[0, 0] / (x[0] @ x[0]))
    net = L.serial(L.Dense(base, W_std=1.0), L.Dense(k, W_std=(c * d / 2) ** 0.5))
    with warnings.catch_warnings():     # N > d: the linear kernel is singular (harmless here)
        warnings.filterwarnings("ignore", message=".*singular to working precision")
        ntk = wl.limits.NTKLimit(net).fit(x, y, lr, args.steps)
        f_ntk = ntk.predict(xt)
    print(f"digits: {x.shape[0]} train / {xt.shape[0]} test, d={d}, K={k}, targets x{args.target_scale:g}; "
          f"lr={lr:.4g} ({args.lr_frac:g} x stability bound), {args.steps} steps, "
          f"batch={'full' if args.batch_size is None else args.batch_size}, base width {base}")
    print(f"muP limit: feature kernel moved by {moved:.2f} (relative Frobenius) during training")
    print(f"{'model':>14} | {'train loss':>18} | {'test acc':>14} | {'|f - f_lim| / |f_lim| (test)':>28}")
    print(f"{'muP limit':>14} | {lim.loss_curve_[-1]:18.5f} | {acc(f_lim):14.3f} | {0.0:28.4f}")
    print(f"{'NTK limit':>14} | {ntk.loss_curve_[-1]:18.5f} | {acc(f_ntk):14.3f} | "
          f"{float((f_ntk - f_lim).norm() / f_lim.norm()):28.4f}")
    curves, result = {}, {"lim_loss": float(lim.loss_curve_[-1]), "ntk_loss": float(ntk.loss_curve_[-1]),
                          "lim_acc": acc(f_lim), "ntk_acc": acc(f_ntk), "dist": {}, "loss": {}}
    for w in args.widths:
        losses, accs, dists = [], [], []
        for s in range(args.seeds):
            model = wl.limits.mup_linear_1lp(d, k, w, base, seed=1000 * w + s)   # float32
            losses.append(wl.limits.train_sgd(model, x, y, lr, args.steps, batch_size=args.batch_size))
            with torch.no_grad():
                f = model(xt.float()).double()
            accs.append(acc(f))
            dists.append(float((f - f_lim).norm() / f_lim.norm()))
        curves[w] = torch.stack(losses).mean(0)
        result["dist"][w], result["loss"][w] = float(np.mean(dists)), float(curves[w][-1])
        fl = torch.stack(losses)[:, -1]
        print(f"{'width ' + str(w):>14} | {fl.mean():10.5f} +- {fl.std() if len(fl) > 1 else 0:.5f} | "
              f"{np.mean(accs):7.3f} +- {np.std(accs):.3f} | {np.mean(dists):20.4f} +- {np.std(dists):.4f}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    result["plot"] = plot(curves, lim.loss_curve_, ntk.loss_curve_, Path(args.out) / "feature_learning_limit.png")
    return result


def plot(curves: dict, limit: torch.Tensor, ntk: torch.Tensor, path: Path,
         title: str = "linear 1-hidden-layer net on digits, muP",
         limit_label: str = "muP limit (width inf)") -> Path | None:
    """Loss vs step: one line per width, the limit dashed, the NTK limit dotted (log y);
    also used by examples/pi_limit_digits.py."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    cmap = plt.get_cmap("viridis")
    for i, (w, c) in enumerate(curves.items()):
        ax.plot(c.numpy(), color=cmap(i / max(1, len(curves) - 1)), label=f"width {w}")
    ax.plot(limit.numpy(), "k--", lw=2, label=limit_label)
    ax.plot(ntk.numpy(), ":", color="gray", lw=2, label="NTK limit")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main()
