"""Digits demo, training part: infinite-width predictions vs finite networks trained by GD.

(a) Infinite-width NNGP and NTK classifiers (one-hot regression) on scikit-learn's digits:
    test accuracy at t = inf and along training time, from one cached eigendecomposition.
(b) Finite networks of widths 64, 256, 1024, 4096 built from the same spec (NTK
    parametrization), trained by full-batch gradient descent with the same learning rate;
    their test outputs approach the closed-form NTK prediction (started from each network's
    own initial outputs) as the width grows.  Saves a PNG of outputs vs training time.

``run(out_dir)`` returns the numbers; ``python examples/demo_training.py [OUT_DIR]`` prints them.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from widelimit import layers as L  # noqa: E402
from widelimit import predict  # noqa: E402

WIDTHS = (64, 256, 1024, 4096)


def spec(width: int = 1024):
    """The architecture shared by the infinite-width and the finite networks."""
    return L.serial(L.Dense(width, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(10, W_std=1.5, b_std=0.05))


def load(n_train: int = 1200, seed: int = 0):
    from sklearn.datasets import load_digits
    x, labels = load_digits(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(x))
    x, labels = x[perm], labels[perm]
    x = x / 16.0
    x = (x - x[:n_train].mean(0)) / (x[:n_train].std(0) + 1e-2)    # standardise on the train split
    y = np.eye(10)[labels]
    return (torch.tensor(x[:n_train]), torch.tensor(y[:n_train]), labels[:n_train],
            torch.tensor(x[n_train:]), labels[n_train:])


def accuracy(scores: torch.Tensor, labels: np.ndarray) -> float:
    return float((scores.argmax(-1).numpy() == labels).mean())


def infinite_width(x, y, xt, labels_t, lr: float, times: np.ndarray) -> dict:
    """(a): NNGP / NTK ensemble accuracy at t = inf and at ``times`` (steps of size ``lr``)."""
    ens = predict.gradient_descent_mse_ensemble(spec(), x, y, learning_rate=lr, diag_reg=1e-4)
    out = {}
    for g in ("nngp", "ntk"):
        at_t = ens(times, xt, g)
        out[g] = {"inf": accuracy(ens(None, xt, g), labels_t),
                  "t": {float(t): accuracy(m, labels_t) for t, m in zip(times, at_t)}}
    return out


def train_finite(width: int, x, y, xt, lr: float, checkpoints: list, seed: int, bar=None):
    """Full-batch GD on ||f - y||^2 / (2 N K); test outputs at the checkpoints (steps)."""
    net = spec(width).module(input_shape=(x.shape[1],), dtype=torch.float32, seed=seed)
    xf, yf, xtf = x.float(), y.float(), xt.float()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    with torch.no_grad():
        f0, g0 = net(xf).double(), net(xtf).double()
    outs, step = [], 0
    for c in checkpoints:
        while step < c:
            opt.zero_grad()
            (((net(xf) - yf) ** 2).sum() / (2 * yf.numel())).backward()
            opt.step()
            step += 1
            if bar is not None:
                bar.update(1)
        with torch.no_grad():
            outs.append(net(xtf).double())
    return f0, g0, torch.stack(outs)


def run(out_dir: str, widths=WIDTHS, n_finite_train: int = 256, steps: int = 500,
        seed: int = 0, threads: Optional[int] = 1) -> dict:
    """Run parts (a) and (b); write ``demo_training.png`` into ``out_dir``; return the numbers.

    ``threads``: torch intra-op threads during the run (restored afterwards; None leaves
    them).  One thread is the default: the matrices are small, and on a shared 2-core
    machine two threads spin-wait (measured: 30 s with 1 thread, 270 s with 2).
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(out_dir, widths, n_finite_train, steps, seed)
    finally:
        torch.set_num_threads(previous)


def _run(out_dir: str, widths, n_finite_train: int, steps: int, seed: int) -> dict:
    from tqdm.auto import tqdm
    t_start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    x, y, labels, xt, labels_t = load()
    ntk = spec().kernel_fn(x, None, get="ntk")
    lr_max = predict.max_learning_rate(ntk, y_train_size=y.numel())
    lr = 0.5 * lr_max                                          # eta * lambda_max / (N K) = 1
    times = np.unique(np.round(np.logspace(0, 5, 11)))
    part_a = infinite_width(x, y, xt, labels_t, lr, times)

    # (b) finite networks on a subset (keeps width 4096 fast), same learning-rate rule
    xs, ys = x[:n_finite_train], y[:n_finite_train]
    k_dd = spec().kernel_fn(xs, None, get="ntk")
    k_td = spec().kernel_fn(xt, xs, get="ntk")
    lr_b = 0.5 * predict.max_learning_rate(k_dd, y_train_size=ys.numel())   # same for all widths
    closed = predict.gradient_descent_mse(k_dd, ys, learning_rate=lr_b)
    checkpoints = sorted({int(c) for c in np.unique(np.round(np.logspace(0, np.log10(steps), 12)))})
    finite = {}
    with tqdm(total=steps * len(widths), desc="GD on finite nets", unit="step") as bar:
        for w in widths:
            f0, g0, outs = train_finite(w, xs, ys, xt, lr_b, checkpoints, seed, bar)
            ref = closed(np.array(checkpoints, dtype=float), f0, g0, k_td)[1]
            dist = float((outs[-1] - ref[-1]).norm() / (ref[-1] - g0).norm())
            finite[w] = {"relative_distance": dist, "accuracy": accuracy(outs[-1], labels_t),
                         "outputs": outs, "closed_form": ref, "init": g0}
    closed_acc = accuracy(finite[widths[-1]]["closed_form"][-1], labels_t)
    plot = os.path.join(out_dir, "demo_training.png")
    _plot(plot, checkpoints, finite, widths)
    return {
        "n_train": int(x.shape[0]), "n_test": int(xt.shape[0]),
        "learning_rate": lr, "infinite_width_accuracy": part_a,
        "finite": {"n_train": n_finite_train, "steps": steps, "learning_rate": lr_b,
                   "relative_distance": {w: finite[w]["relative_distance"] for w in widths},
                   "accuracy": {w: finite[w]["accuracy"] for w in widths},
                   "closed_form_accuracy": closed_acc},
        "plot": plot, "seconds": time.perf_counter() - t_start,
    }


def _plot(path: str, checkpoints, finite: dict, widths) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = plt.cm.viridis(np.linspace(0.1, 0.85, len(widths)))
    steps = np.array(checkpoints)
    for ax, (i, k) in zip(axes[:2], ((0, 0), (1, 3))):
        for w, c in zip(widths, colors):
            ax.plot(steps, finite[w]["outputs"][:, i, k].numpy(), color=c, label=f"width {w}")
            ax.plot(steps, finite[w]["closed_form"][:, i, k].numpy(), color=c, ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("gradient-descent step")
        ax.set_ylabel(f"f(x_test[{i}])[{k}]")
        ax.set_title("finite nets (solid) vs closed-form NTK (dashed)")
    axes[0].legend(fontsize=8)
    d = [finite[w]["relative_distance"] for w in widths]
    axes[2].loglog(widths, d, "o-", label="relative distance at the last step")
    axes[2].loglog(widths, d[0] * np.sqrt(widths[0] / np.array(widths)), "k:", label="1/sqrt(width)")
    axes[2].set_xlabel("width")
    axes[2].legend(fontsize=8)
    axes[2].set_title("finite net vs closed form")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(res: dict) -> None:
    """Print the numbers returned by :func:`run`."""
    acc = res["infinite_width_accuracy"]
    print(f"(a) infinite width, {res['n_train']} train / {res['n_test']} test digits")
    for g in ("nngp", "ntk"):
        along = ", ".join(f"t={t:g}: {a:.3f}" for t, a in acc[g]["t"].items())
        print(f"    {g}: t=inf accuracy {acc[g]['inf']:.3f}; along training {along}")
    fb = res["finite"]
    print(f"(b) finite nets, {fb['n_train']} train points, {fb['steps']} GD steps, lr {fb['learning_rate']:.3g}")
    for w in fb["relative_distance"]:
        print(f"    width {w:5d}: relative distance to closed form {fb['relative_distance'][w]:.4f}, "
              f"test accuracy {fb['accuracy'][w]:.3f}")
    print(f"    closed-form NTK accuracy {fb['closed_form_accuracy']:.3f}; plot: {res['plot']}; "
          f"{res['seconds']:.1f} s")


if __name__ == "__main__":
    report(run(sys.argv[1] if len(sys.argv) > 1 else "demo_out"))
