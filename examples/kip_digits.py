"""Dataset distillation by Kernel Inducing Points (KIP, Nguyen et al. 2021) on digits.

Learns 10 images per class (100 of the 1200 training images' worth) by gradient descent
through the analytic NTK of a 2-hidden-layer ReLU network (``wl.analysis.kip``), then
compares the test accuracy of kernel regression from the distilled set with that from
random class-balanced subsets of the same size (and from all 1200 training images).
Saves the learned images as a PNG grid to ``OUT_DIR/kip_digits.png``.

``run(out_dir)`` returns the numbers; ``python examples/kip_digits.py [OUT_DIR]`` prints them.
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
from widelimit.analysis import class_targets, kip, krr_predict  # noqa: E402


def load(n_train: int = 1200, seed: int = 0):
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(x))
    x, y = x[perm] / 16.0, y[perm]
    mean = x[:n_train].mean(0)
    x = torch.tensor(x - mean)
    y = torch.tensor(y)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], mean


def random_subset(labels: torch.Tensor, per: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in range(10):
        members = torch.nonzero(labels == c).flatten()
        idx.append(members[torch.randperm(members.numel(), generator=g)[:per]])
    return torch.cat(idx)


def run(out_dir: str = "out", per_class: int = 10, steps: int = 100, batch_size: int = 400,
        lr: float = 0.01, n_random: int = 5) -> dict:
    x, y, xt, yt, mean = load()
    net = L.serial(L.Dense(512, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(512, W_std=1.5, b_std=0.05),
                   L.Relu(), L.Dense(1, W_std=1.5))

    def accuracy(xs, ys) -> float:
        with torch.no_grad():
            pred = krr_predict(net.kernel_fn, xs, ys, xt, get="ntk")
        return float((pred.argmax(1) == yt).double().mean())

    res = kip(net.kernel_fn, x, y, per_class, steps=steps, lr=lr, batch_size=batch_size, get="ntk")
    kip_acc = accuracy(res.x_support, res.y_support)
    init_acc = accuracy(x[res.init_indices], class_targets(y[res.init_indices], 10, x.dtype))
    rand = [accuracy(x[i], class_targets(y[i], 10, x.dtype))
            for i in (random_subset(y, per_class, s) for s in range(1, n_random + 1))]
    full = accuracy(x, class_targets(y, 10, x.dtype))
    os.makedirs(out_dir, exist_ok=True)
    plot = os.path.join(out_dir, "kip_digits.png")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    imgs = (res.x_support.numpy() + mean).reshape(10, per_class, 8, 8)
    fig, axes = plt.subplots(per_class, 10, figsize=(5, 0.5 * per_class + 0.4))
    for c in range(10):
        for j in range(per_class):
            ax = axes[j, c] if per_class > 1 else axes[c]
            ax.imshow(imgs[c, j], cmap="gray_r", vmin=0, vmax=1)
            ax.axis("off")
    fig.suptitle(f"KIP, {per_class}/class: KRR test acc {kip_acc:.3f} (random {np.mean(rand):.3f})",
                 fontsize=8)
    fig.savefig(plot, dpi=60)
    plt.close(fig)
    return {"kip_accuracy": kip_acc, "init_accuracy": init_acc, "random_accuracy": rand,
            "random_mean": float(np.mean(rand)), "full_train_accuracy": full,
            "loss_first": float(res.losses[0]), "loss_last": float(res.losses[-1]), "plot": plot}


if __name__ == "__main__":
    t0 = time.time()
    r = run(sys.argv[1] if len(sys.argv) > 1 else "out")
    print(f"KRR test accuracy from 100 distilled images: {r['kip_accuracy']:.3f} "
          f"(their initial random images {r['init_accuracy']:.3f})")
    print(f"from random class-balanced subsets of 100: {r['random_mean']:.3f} "
          f"(min {min(r['random_accuracy']):.3f}, max {max(r['random_accuracy']):.3f}); "
          f"all 1200 training images: {r['full_train_accuracy']:.3f}")
    print(f"KIP loss {r['loss_first']:.4f} -> {r['loss_last']:.4f}; grid: {r['plot']} ({time.time() - t0:.1f} s)")
