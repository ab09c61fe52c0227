"""Benchmark: gradient_descent_mse_ensemble vs one eigendecomposition, in the same run.

FC ReLU network of depth 3 (three hidden Dense(512) + ReLU, readout), d = 784 inputs,
2000 training and 500 test points, 10 outputs, float64.  Rows:

* ``kernels``: the analytic NNGP+NTK train-train and test-train kernels;
* ``eigh (reference)``: one ``torch.linalg.eigh`` of the 2000 x 2000 NTK;
* ``cholesky (reference)``: one Cholesky factorisation of it;
* ``ensemble t=inf``: ``predict_fn(None, x_test, "ntk")`` (Cholesky path), kernels given;
* ``ensemble 10 times``: ``predict_fn(t=[10 times], x_test, "ntk")`` (eigh path), kernels given;
* ``... + cov``: the same with ``compute_cov=True`` (needs the test-test NNGP too);
* ``end-to-end t=inf``: a fresh predictor, kernels included.

Usage: python benchmarks/predict.py [--n-train 2000] [--n-test 500] [--threads N] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
# opt in to widelimit's process-wide tuning (glibc malloc, OPENBLAS_THREAD_TIMEOUT) in this
# process and its subprocesses, so numbers stay comparable across runs; WIDELIMIT_TUNE_RUNTIME=0
# measures without (docs/benchmarks.md#runtime-tuning)
os.environ.setdefault("WIDELIMIT_TUNE_RUNTIME", "1")
import sys
import time
from collections import namedtuple

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from widelimit import layers as L  # noqa: E402
from widelimit import predict  # noqa: E402


def net():
    layers = []
    for _ in range(3):
        layers += [L.Dense(512, W_std=1.5, b_std=0.05), L.Relu()]
    return L.serial(*layers, L.Dense(1, W_std=1.5, b_std=0.05))


def timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--dim", type=int, default=784)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--json", default=None, help="write the results as JSON to this path")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n_train, args.dim, generator=g, dtype=torch.float64)
    xt = torch.randn(args.n_test, args.dim, generator=g, dtype=torch.float64)
    y = torch.randn(args.n_train, 10, generator=g, dtype=torch.float64)
    spec = net()
    rows = {}
    warm = torch.randn(200, 200, dtype=torch.float64)
    torch.linalg.eigh(warm @ warm.T)                      # LAPACK / thread-pool warm-up
    torch.linalg.cholesky(warm @ warm.T + torch.eye(200, dtype=torch.float64))

    def all_kernels():
        return (spec.kernel_fn(x, None, get=("nngp", "ntk")),
                spec.kernel_fn(xt, x, get=("nngp", "ntk")),
                spec.kernel_fn(xt, None, get="nngp"))
    rows["kernels (train-train, test-train, test-test)"], (kdd, ktd, ktt) = timed(all_kernels)
    ntk = kdd.ntk
    rows["eigh (reference)"], _ = timed(lambda: torch.linalg.eigh(ntk), args.repeat)
    rows["cholesky (reference)"], _ = timed(lambda: torch.linalg.cholesky(ntk), args.repeat)

    def cached_kernel_fn(a, b, get):
        key = "dd" if b is None and a.shape[0] == x.shape[0] else ("td" if b is not None else "tt")
        src = {"dd": kdd, "td": ktd}.get(key)
        names = (get,) if isinstance(get, str) else tuple(get)
        vals = [ktt if key == "tt" else getattr(src, n) for n in names]
        return vals[0] if isinstance(get, str) else namedtuple("K", names)(*vals)

    times = np.logspace(0, 4, 10)

    def fresh():
        return predict.gradient_descent_mse_ensemble(cached_kernel_fn, x, y, diag_reg=1e-4)
    rows["ensemble t=inf (kernels given)"], _ = timed(lambda: fresh()(None, xt, "ntk"), args.repeat)
    rows["ensemble 10 times (kernels given)"], mean = timed(lambda: fresh()(times, xt, "ntk"),
                                                             args.repeat)
    rows["ensemble 10 times + cov (kernels given)"], _ = timed(
        lambda: fresh()(times, xt, "ntk", compute_cov=True), args.repeat)
    fn = fresh()
    fn(times, xt, "ntk")
    rows["ensemble 10 times, factorisation cached"], _ = timed(lambda: fn(times, xt, "ntk"), args.repeat)
    rows["end-to-end t=inf (kernels included)"], _ = timed(
        lambda: predict.gradient_descent_mse_ensemble(spec, x, y, diag_reg=1e-4)(None, xt, "ntk"))
    assert mean.shape == (10, args.n_test, 10) and torch.isfinite(mean).all()

    ref = rows["eigh (reference)"]
    print(f"gradient_descent_mse_ensemble: {args.n_train} train / {args.n_test} test, FC ReLU depth 3, "
          f"d={args.dim}, float64, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'case':48s} {'seconds':>9s} {'x eigh':>7s}")
    for name, sec in rows.items():
        print(f"{name:48s} {sec:9.3f} {sec / ref:7.2f}")
    result = {"n_train": args.n_train, "n_test": args.n_test, "dim": args.dim,
              "threads": torch.get_num_threads(), "seconds": rows,
              "relative_to_eigh": {k: v / ref for k, v in rows.items()}}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
