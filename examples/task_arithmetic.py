"""Task arithmetic in the tangent space: linearised vs non-linear fine-tuning on digits.

"Task Arithmetic in the Tangent Space" (Ortiz-Jimenez, Favero & Frossard, NeurIPS 2023):
fine-tuning a pre-trained model theta_0 on task t gives a *task vector* tau_t = theta_t -
theta_0; adding task vectors, theta_0 + alpha (tau_A + tau_B), should give one model that
solves both tasks. It works better when the model is fine-tuned in its tangent space, i.e.
as the linearised model ``f(x; theta_0) + J(x; theta_0)(theta - theta_0)``
(``wl.linearize``), whose task vectors interfere less ("weight disentanglement").

Here: an MLP is pre-trained on a small random subset of digits (10-way); task A is
telling apart the digits 0-4 and task B the digits 5-9, both read from the same five
logits (a shared head, so that the tasks can interfere: with separate heads both methods
merge without loss on this small problem). Both tasks are fine-tuned with the same optimiser and steps, once
non-linearly and once linearised. Reported per method: each fine-tuned model's accuracy
on its own task, and the accuracy on both tasks of the single merged model
theta_0 + alpha (tau_A + tau_B), with alpha chosen on a validation split; "normalised"
divides the merged accuracy by the single-task accuracy (the paper's measure); all means
over seeds. On this small MLP the linearised task vectors are *not* better disentangled
than the non-linear ones (the paper's gain is for large pre-trained models). Saves
``OUT_DIR/task_arithmetic.png`` (merged accuracy against alpha).

``run(out_dir, ...)`` returns the numbers; ``python examples/task_arithmetic.py [OUT_DIR]``
prints them.
"""
from __future__ import annotations

import copy
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import widelimit as wl  # noqa: E402

TASKS = {"A": tuple(range(5)), "B": tuple(range(5, 10))}
ALPHAS = tuple(np.round(np.arange(0.0, 2.01, 0.2), 2))


def load(seed: int):
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)
    y = torch.tensor(y)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    parts = {"train": perm[:1000], "val": perm[1000:1300], "test": perm[1300:]}
    return {k: (x[i], y[i]) for k, i in parts.items()}


def task_data(xy, task: str):
    x, y = xy
    keep = torch.isin(y, torch.tensor(TASKS[task]))
    return x[keep], y[keep] - TASKS[task][0]


def head(out: torch.Tensor, task: str, shared: bool) -> torch.Tensor:
    """The task's logits: its own five (separate heads) or the first five for both (shared)."""
    lo = 0 if shared else TASKS[task][0]
    return out[:, lo:lo + len(TASKS[task])]


def train(model: nn.Module, x, y, steps: int, lr: float, task=None, shared: bool = False,
          seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(x), (min(128, len(x)),), generator=g)
        out = model(x[idx])
        loss = nn.functional.cross_entropy(out if task is None else head(out, task, shared), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, xy, task: str, shared: bool = False) -> float:
    x, y = task_data(xy, task)
    return float((head(model(x), task, shared).argmax(1) == y).float().mean())


def vector(model: nn.Module) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()


def with_vector(model: nn.Module, v: torch.Tensor) -> nn.Module:
    m = copy.deepcopy(model)
    torch.nn.utils.vector_to_parameters(v, m.parameters())
    return m


def run_one(width: int = 256, n_pretrain: int = 150, pretrain_steps: int = 300,
            steps: int = 300, lr: float = 1e-3, shared_head: bool = True, seed: int = 0) -> dict:
    """One pre-training, four fine-tunings and the merges, for one seed."""
    data = load(seed)
    torch.manual_seed(seed)
    base = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))
    xp, yp = data["train"][0][:n_pretrain], data["train"][1][:n_pretrain]
    train(base, xp, yp, pretrain_steps, lr, seed=seed)
    pre_acc = {t: accuracy(base, data["test"], t) for t in TASKS}      # the task's own five logits
    sh = shared_head

    res: dict = {"pretrained": pre_acc}
    curves = {}
    for method in ("non-linear", "linearised"):
        start = base if method == "non-linear" else wl.linearize(base)
        theta0 = vector(start)
        tuned = {t: train(copy.deepcopy(start), *task_data(data["train"], t), steps, lr, task=t,
                          shared=sh, seed=seed) for t in TASKS}
        tau = {t: vector(m) - theta0 for t, m in tuned.items()}
        single = {t: accuracy(tuned[t], data["test"], t, sh) for t in TASKS}

        def merged(alpha: float, split: str) -> dict:
            m = with_vector(start, theta0 + alpha * (tau["A"] + tau["B"]))
            return {t: accuracy(m, data[split], t, sh) for t in TASKS}

        val = {a: np.mean(list(merged(a, "val").values())) for a in ALPHAS}
        alpha = max(val, key=val.get)
        both = merged(alpha, "test")
        curves[method] = [np.mean(list(merged(a, "test").values())) for a in ALPHAS]
        res[method] = {
            "single_task": single, "merged": both, "alpha": float(alpha),
            "merged_mean": float(np.mean(list(both.values()))),
            "normalised": float(np.mean([both[t] / single[t] for t in TASKS])),
            "task_vector_cosine": float(torch.nn.functional.cosine_similarity(tau["A"], tau["B"], 0)),
        }
    res["curves"] = curves
    return res


def run(out_dir: str = "out", seeds=(0, 1, 2), plot: bool = True, **kw) -> dict:
    """``run_one`` for each seed (data split, initialisation, batches); means over seeds."""
    t0 = time.time()
    runs = [run_one(seed=s, **kw) for s in seeds]
    res: dict = {"seeds": list(seeds), "runs": runs, "pretrained": {
        t: float(np.mean([r["pretrained"][t] for r in runs])) for t in TASKS}}
    for m in ("non-linear", "linearised"):
        res[m] = {k: float(np.mean([r[m][k] for r in runs]))
                  for k in ("merged_mean", "normalised", "alpha", "task_vector_cosine")}
        res[m]["normalised_std"] = float(np.std([r[m]["normalised"] for r in runs]))
        for k in ("single_task", "merged"):
            res[m][k] = {t: float(np.mean([r[m][k][t] for r in runs])) for t in TASKS}
    curves = {m: np.mean([r["curves"][m] for r in runs], 0) for m in ("non-linear", "linearised")}
    res["seconds"] = time.time() - t0
    if plot:
        res["plot"] = _plot(out_dir, curves, res)
    return res


def _plot(out_dir: str, curves: dict, res: dict) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "task_arithmetic.png")
    fig, ax = plt.subplots(figsize=(4.6, 3.3))
    for (method, c), color in zip(curves.items(), ("C0", "C3")):
        ax.plot(ALPHAS, c, "-o", ms=3, color=color, label=method)
    ax.axhline(np.mean(list(res["pretrained"].values())), color="0.5", ls=":", label="pre-trained")
    ax.set_xlabel("alpha in theta_0 + alpha (tau_A + tau_B)")
    ax.set_ylabel("merged model: test accuracy (A, B)")
    ax.set_title(f"digits 0-4 + digits 5-9, shared head, mean of {len(res['seeds'])} seeds", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    r = run(sys.argv[1] if len(sys.argv) > 1 else "out")
    pa = r["pretrained"]
    print(f"means over seeds {r['seeds']}; pre-trained (own logits): task A {pa['A']:.3f}, B {pa['B']:.3f}")
    print("method       single A  single B  merged A  merged B  normalised  alpha  cos(tau_A, tau_B)")
    for m in ("non-linear", "linearised"):
        s = r[m]
        print(f"{m:12s} {s['single_task']['A']:8.3f}  {s['single_task']['B']:8.3f}  {s['merged']['A']:8.3f}  "
              f"{s['merged']['B']:8.3f}  {s['normalised']:5.3f}+-{s['normalised_std']:.3f} {s['alpha']:5.2f}  {s['task_vector_cosine']:8.3f}")
    print(f"plot: {r['plot']} ({r['seconds']:.1f} s)")
