"""Finite pi-nets approach the pi-limit of a deep ReLU MLP (Yang, Santacroce & Hu 2022).

A depth-2 ReLU MLP with rank-32 projections trained by projected muP SGD on scikit-learn's
digits (standardised pixels d = 64, centred one-hot targets times ``--target-scale``,
300 train / 1497 test, minibatches of 50), at widths 64..8192 (several draws of the
projections each, ``wl.limits.PiNet``), next to

* ``wl.limits.PiLimit``: the exact width -> infinity limit of the same training (same
  initial r x r matrices, same batches; deterministic, its output at initialisation is 0);
* ``wl.limits.NTKLimit``: the lazy limit of a ReLU MLP of the same depth
  (``widelimit.layers``), its readout scale chosen so that its NTK on the training inputs
  has the same top eigenvalue as the pi-limit's first-step kernel (so the common ``lr`` is
  the same fraction of both stability bounds), trained by gradient flow for the same time
  ``lr * steps``; and its t = infinity limit (NTK kernel regression).

Prints per width the final training loss, the test accuracy and the relative distance of
the test outputs to the limit's, and plots the loss curves (``out/pi_limit_digits.png``:
one line per width, the limit dashed, NTK dotted).  Shares ``load`` and ``plot`` with
examples/feature_learning_limit.py.

    python examples/pi_limit_digits.py            # ~1-2 min on one core
    python examples/pi_limit_digits.py --quick    # widths 64..1024, 1 draw, 40 steps
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import widelimit as wl
from widelimit import layers as L
from widelimit.predict import max_learning_rate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feature_learning_limit import load, plot  # noqa: E402


def lazy_mlp(depth: int, readout_std: float, width: int = 512):
    """ReLU MLP with ``depth`` hidden layers, NTK parametrization, no biases."""
    layers = [L.Dense(width, W_std=1.0), L.Relu()]
    for _ in range(depth - 1):
        layers += [L.Dense(width, W_std=2 ** 0.5), L.Relu()]
    return L.serial(*layers, L.Dense(10, W_std=readout_std))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024, 4096, 8192])
    ap.add_argument("--seeds", type=int, default=2, help="draws of the projections per width")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=50, help="0: full batch")
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--target-scale", type=float, default=3.0)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--lr-frac", type=float, default=0.2,
                    help="learning rate as a fraction of the first step's kernel stability bound")
    ap.add_argument("--out", default="out")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.widths, args.seeds, args.steps = [64, 256, 1024], 1, 40
    x, y, xt, lt = load(args.n_train, args.target_scale)
    d, k = x.shape[1], y.shape[1]
    bs = args.batch_size or None
    acc = lambda f: float((f.argmax(1) == lt).double().mean())   # noqa: E731
    rel = lambda f, g: float((f - g).norm() / g.norm())           # noqa: E731

    t0 = time.perf_counter()
    lim = wl.limits.PiLimit(d, k, depth=args.depth, rank=args.rank)
    c0 = lim.representations(x)[-1]
    k0 = lim.expect.kernel(c0, c0)            # first step: f_1 = lr/(B K) sum_i y_i K(c_i, c)
    n_b = bs or x.shape[0]
    lr = args.lr_frac * max_learning_rate(k0[:n_b, :n_b], n_b * k)
    lim.fit(x, y, lr, args.steps, batch_size=bs)
    f_lim = lim.predict(xt)
    c_t = lim.representations(x)[-1]
    moved = rel(lim.expect.kernel(c_t, c_t), k0)
    t_lim = time.perf_counter() - t0
    # the lazy limit: NTK top eigenvalue matched to the pi-limit's first-step kernel
    top = lambda m: float(torch.linalg.eigvalsh(m.double())[-1])  # noqa: E731
    theta1 = lazy_mlp(args.depth, 1.0).kernel_fn(x, x, "ntk")
    net = lazy_mlp(args.depth, (top(k0) / top(theta1)) ** 0.5)
    ntk = wl.limits.NTKLimit(net).fit(x, y, lr, args.steps)
    f_ntk = ntk.predict(xt)
    f_krr = wl.limits.NTKLimit(net).fit(x, y, lr, None).predict(xt)
    print(f"digits: {x.shape[0]} train / {xt.shape[0]} test, d={d}, K={k}, targets x{args.target_scale:g}; "
          f"ReLU, depth {args.depth}, rank {args.rank}; lr={lr:.4g} ({args.lr_frac:g} x stability bound), "
          f"{args.steps} steps, batch={bs or 'full'}")
    print(f"pi-limit ({t_lim:.1f} s): readout kernel K(c^L, c^L) moved by {moved:.2f} (relative Frobenius)")
    print(f"{'model':>16} | {'train loss':>18} | {'test acc':>14} | {'|f - f_lim| / |f_lim| (test)':>28}")
    print(f"{'pi-limit':>16} | {lim.loss_curve_[-1]:18.5f} | {acc(f_lim):14.3f} | {0.0:28.4f}")
    print(f"{'NTK, t=lr*steps':>16} | {ntk.loss_curve_[-1]:18.5f} | {acc(f_ntk):14.3f} | {rel(f_ntk, f_lim):28.4f}")
    print(f"{'NTK, t=inf':>16} | {'0 (interpolates)':>18} | {acc(f_krr):14.3f} | {rel(f_krr, f_lim):28.4f}")
    result = {"lr": lr, "lim_loss": float(lim.loss_curve_[-1]), "lim_acc": acc(f_lim),
              "ntk_loss": float(ntk.loss_curve_[-1]), "ntk_acc": acc(f_ntk), "ntk_inf_acc": acc(f_krr),
              "moved": moved, "dist": {}, "loss": {}, "acc": {}}
    curves = {}
    for w in args.widths:
        losses, accs, dists = [], [], []
        for s in range(args.seeds):
            model = wl.limits.PiNet(d, k, w, depth=args.depth, rank=args.rank, width_seed=1000 * w + s)
            try:
                model.fit(x, y, lr, args.steps, batch_size=bs)
            except wl.limits.DivergenceError as err:
                print(f"{'width ' + str(w):>16} | draw {s} diverged at step {err.step}")
                continue
            f = model.predict(xt)
            losses.append(model.loss_curve_)
            accs.append(acc(f))
            dists.append(rel(f, f_lim))
        if not losses:
            result["dist"][w] = float("inf")
            continue
        curves[w] = torch.stack(losses).mean(0)
        fl = torch.stack(losses)[:, -1]
        result["dist"][w], result["loss"][w] = float(np.mean(dists)), float(fl.mean())
        result["acc"][w] = float(np.mean(accs))
        print(f"{'width ' + str(w):>16} | {fl.mean():10.5f} +- {fl.std() if len(fl) > 1 else 0:.5f} | "
              f"{np.mean(accs):7.3f} +- {np.std(accs):.3f} | {np.mean(dists):20.4f} +- {np.std(dists):.4f}")
    ws = [w for w in args.widths if np.isfinite(result["dist"][w])]
    if len(ws) > 1:
        result["slope"] = float(np.polyfit(np.log(ws), np.log([result["dist"][w] for w in ws]), 1)[0])
        print(f"distance vs width: fitted slope {result['slope']:.2f} (width^-1/2: -0.5)")
    print(f"total {time.perf_counter() - t0:.1f} s")
    result["plot"] = plot(curves, lim.loss_curve_, ntk.loss_curve_, Path(args.out) / "pi_limit_digits.png",
                          title=f"ReLU MLP depth {args.depth}, rank {args.rank} pi-net on digits",
                          limit_label="pi-limit (width inf)")
    return result


if __name__ == "__main__":
    main()
