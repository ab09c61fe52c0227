"""Kernel regression beyond memory: Falkon on N points vs exact KRR on a 10 000 subset.

Data: a synthetic 784-d, 10-class task (MNIST-sized; MNIST itself is not available
offline): class means on the unit sphere plus isotropic noise, one-hot targets.  Kernel:
depth-3 ReLU NTK.  Rows: Falkon (time to relative residual ``--tol``, iterations, test error)
and exact KRR (``torch.linalg`` Cholesky) on the first ``--subset`` points.

``benchmarks/scale.py`` runs ``run(args)``; standalone: ``python benchmarks/scale_cases/solvers.py``.
"""
from __future__ import annotations

import argparse
import time

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("solvers")
    g.add_argument("--solvers-n", type=int, default=60_000, help="training points for Falkon")
    g.add_argument("--solvers-centers", type=int, default=5_000, help="Nystrom centers M")
    g.add_argument("--solvers-subset", type=int, default=10_000, help="exact KRR subset size")
    g.add_argument("--solvers-test", type=int, default=2_000, help="test points")
    g.add_argument("--solvers-tol", type=float, default=1e-4, help="relative residual")
    g.add_argument("--solvers-dtype", default="float64", choices=["float32", "float64"])


def _data(n: int, d: int, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(10, d, generator=g, dtype=torch.float64)
    means /= means.norm(dim=1, keepdim=True)
    c = torch.randint(0, 10, (n,), generator=g)
    x = means[c] + 6.0 * torch.randn(n, d, generator=g, dtype=torch.float64) / d ** 0.5
    y = torch.nn.functional.one_hot(c, 10).to(torch.float64) - 0.1
    return x.to(dtype), y.to(dtype), c


def _net():
    from widelimit import layers as L
    return L.serial(*[m for _ in range(3) for m in (L.Dense(512, W_std=1.4, b_std=0.05), L.Relu())],
                    L.Dense(1, W_std=1.4, b_std=0.05))


def run(args: argparse.Namespace) -> list[dict]:
    import widelimit as wl
    n, m, sub, nt = args.solvers_n, args.solvers_centers, args.solvers_subset, args.solvers_test
    dtype = getattr(torch, args.solvers_dtype)
    x, y, c = _data(n + nt, 784, dtype, 0)
    xtr, ytr, xte, cte = x[:n], y[:n], x[n:], c[n:]
    net = _net()
    lam = 1e-3              # ridge per training point: absolute ridge lam * n
    rows = []
    t0 = time.perf_counter()
    model = wl.KernelRidge(net, solver="falkon", n_centers=min(m, n), ridge=lam * n,
                           tol=args.solvers_tol, maxiter=500).fit(xtr, ytr)
    fit_s = time.perf_counter() - t0
    pred = model.predict(xte)
    info = model.solve_info_
    rows.append({"case": "falkon", "n": n, "n_centers": info["n_centers"], "seconds": round(fit_s, 2),
                 "iterations": info["iterations"], "residual": float(f"{info['residual']:.2e}"),
                 "converged": info["converged"],
                 "test_error": float((pred.argmax(1) != cte).double().mean())})
    sub = min(sub, n)
    t0 = time.perf_counter()
    exact = wl.KernelRidge(net, solver="direct", ridge=lam * sub).fit(xtr[:sub], ytr[:sub])
    ex_s = time.perf_counter() - t0
    pe = exact.predict(xte)
    rows.append({"case": "exact_krr_subset", "n": sub, "seconds": round(ex_s, 2),
                 "iterations": 0, "residual": float(f"{exact.solve_info_['residual']:.2e}"),
                 "test_error": float((pe.argmax(1) != cte).double().mean())})
    t0 = time.perf_counter()
    fs = wl.KernelRidge(net, solver="falkon", n_centers=min(m, sub), ridge=lam * sub,
                        tol=args.solvers_tol, maxiter=500).fit(xtr[:sub], ytr[:sub])
    rows.append({"case": "falkon_subset", "n": sub, "n_centers": fs.solve_info_["n_centers"],
                 "seconds": round(time.perf_counter() - t0, 2), "iterations": fs.solve_info_["iterations"],
                 "residual": float(f"{fs.solve_info_['residual']:.2e}"),
                 "test_error": float((fs.predict(xte).argmax(1) != cte).double().mean()),
                 "rel_diff_vs_exact": float((fs.predict(xte) - pe).norm() / pe.norm())})
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_arguments(p)
    for r in run(p.parse_args()):
        print(r)
