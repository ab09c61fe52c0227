"""Out-of-core kernels: ``wl.compute_kernel`` into a Zarr store under a memory budget,
against the in-memory ``kernel_fn`` rate measured in the same run.

Float32, d = 784, depth-3 ReLU NTK (``get="ntk"``, the upper triangle of a symmetric kernel).
Every measurement runs in a fresh subprocess so that its peak RSS is its own:

* ``in_memory``: ``net.kernel_fn(x, None, get="ntk")`` on ``--store-ref-n`` points (a
  size that comfortably fits in memory; the median of 3 calls), entries/s, measured
  before and after the out-of-core runs (their mean is the baseline);
* ``out_of_core``: ``compute_kernel(net.kernel_fn, x, out=..., get="ntk",
  max_memory=--store-budget)`` for each N in ``--store-n``: wall time, peak RSS (must stay
  under the budget), entries/s and their ratio to the in-memory rate;
* ``out_of_core_upper`` (``--store-upper``): the same with ``mirror=False`` (only the upper
  block triangle is stored: half the bytes).

The store lives in a temporary directory (``--store-dir``) and is deleted afterwards
(N = 60 000 needs 14.4 GB of disk).  ``benchmarks/scale.py`` runs ``run(args)``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

D = 784

_CHILD = r"""
import json, resource, shutil, sys, time, torch
sys.path.insert(0, {root!r})
import widelimit as wl
sys.path.insert(0, {bench!r})
from scale_cases.store import net, inputs
mode, n, budget, path = {mode!r}, {n}, {budget!r}, {path!r}
x = inputs(n)
f = net().kernel_fn
f(x[:256], None, get="ntk")         # warm-up: first-call costs are not the rate
if mode == "in_memory":
    times = []
    for _ in range(3):                 # median of 3 calls: one call is a few seconds
        t0 = time.perf_counter()
        K = f(x, None, get="ntk")
        times.append(time.perf_counter() - t0)
        del K
    dt = sorted(times)[1]
    block = n
else:
    t0 = time.perf_counter()
    store = wl.compute_kernel(f, x, out=path, get="ntk", max_memory=budget,
                              mirror=(mode != "upper"))
    assert store.complete
    block = store.block_size
    dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("RESULT" + json.dumps({{"seconds": dt, "peak_rss_bytes": rss, "block_size": block}}))
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("store (out-of-core compute_kernel)")
    g.add_argument("--store-n", type=int, nargs="+", default=[20_000, 60_000],
                   help="N of the out-of-core runs")
    g.add_argument("--store-ref-n", type=int, default=20_000,
                   help="N of the in-memory reference (median of 3 calls)")
    g.add_argument("--store-budget", default="4GB", help="max_memory of compute_kernel")
    g.add_argument("--store-dir", default=None, help="where the temporary stores go")
    g.add_argument("--store-upper", action="store_true",
                   help="also store only the upper block triangle (mirror=False) for each N")


def net():
    from widelimit import layers as L
    return L.serial(*[m for _ in range(3) for m in (L.Dense(512, W_std=1.4, b_std=0.05), L.Relu())],
                    L.Dense(1, W_std=1.4, b_std=0.05))


def inputs(n: int):
    import torch
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, D, generator=g, dtype=torch.float32) / D ** 0.5


def _child(mode: str, n: int, budget: str, path: str) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = _CHILD.format(root=root, bench=os.path.join(root, "benchmarks"), mode=mode, n=n, budget=budget, path=path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT"):])
    raise RuntimeError(f"the {mode} N={n} run failed:\n{out.stderr[-3000:]}")


def run(args: argparse.Namespace) -> list[dict]:
    from widelimit.scale.memory import parse_memory
    budget = parse_memory(args.store_budget)
    refs = [_child("in_memory", args.store_ref_n, args.store_budget, "")]
    rows = []
    modes = ["out_of_core"] + (["upper"] if getattr(args, "store_upper", False) else [])
    for n, mode in [(n, m) for n in args.store_n for m in modes]:
        with tempfile.TemporaryDirectory(dir=args.store_dir) as tmp:
            r = _child(mode, n, args.store_budget, os.path.join(tmp, "K.zarr"))
        rate = n ** 2 / r["seconds"]
        rows.append({"case": "out_of_core" if mode == "out_of_core" else "out_of_core_upper", "n": n, "seconds": round(r["seconds"], 1),
                     "peak_rss_gb": round(r["peak_rss_bytes"] / 1e9, 2),
                     "budget_gb": round(budget / 1e9, 2),
                     "under_budget": r["peak_rss_bytes"] <= budget,
                     "block_size": r["block_size"], "Mentries_per_s": round(rate / 1e6, 1),
                     "rate": rate})
    # the reference before and after the out-of-core runs: their mean is the baseline
    refs.append(_child("in_memory", args.store_ref_n, args.store_budget, ""))
    ref_s = sum(r["seconds"] for r in refs) / len(refs)
    ref_rate = args.store_ref_n ** 2 / ref_s
    head = {"case": "in_memory", "n": args.store_ref_n, "seconds": round(ref_s, 2),
            "seconds_before_after": [round(r["seconds"], 2) for r in refs],
            "peak_rss_gb": round(max(r["peak_rss_bytes"] for r in refs) / 1e9, 2),
            "block_size": args.store_ref_n, "Mentries_per_s": round(ref_rate / 1e6, 1),
            "vs_in_memory": 1.0}
    for r in rows:
        r["vs_in_memory"] = round(r.pop("rate") / ref_rate, 2)
    return [head] + rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_arguments(p)
    for row in run(p.parse_args()):
        print(row)
