"""NNGP+NTK of fully connected ReLU networks vs the input Gram matrix (the floor).

    python benchmarks/kernels.py [--sizes 1000 2000 4000] [--depths 3 20] [--json out.json]

For each case: seconds (median of warm calls) for NNGP+NTK of
[Dense(512, W_std=1.5, b_std=0.05), Relu] x depth + Dense(1) on x of shape (N, 784),
next to the single GEMM x @ x.T measured in the same run, and their ratio.
neural-tangents 0.6.5 on this machine: 0.024 / 0.133 / 0.528 s at N = 1000 / 2000 / 4000
(depth 3) and 2.03 s at N = 2000, depth 20 (float32; ../shared/PEER-BASELINE.md).
Each case runs in a fresh subprocess so its peak RSS is its own.
"""
from __future__ import annotations

import argparse
import json
import os
# opt in to widelimit's process-wide tuning (glibc malloc, OPENBLAS_THREAD_TIMEOUT) in this
# process and its subprocesses, so numbers stay comparable across runs; WIDELIMIT_TUNE_RUNTIME=0
# measures without (docs/benchmarks.md#runtime-tuning)
os.environ.setdefault("WIDELIMIT_TUNE_RUNTIME", "1")
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from _common import peak_rss_gb, print_table, timeit, write_json  # noqa: E402

PEER = {(3, 1000): 0.024, (3, 2000): 0.133, (3, 4000): 0.528, (20, 2000): 2.03}


def mlp(depth: int):
    from widelimit import layers as L
    layers = []
    for _ in range(depth):
        layers += [L.Dense(512, W_std=1.5, b_std=0.05), L.Relu()]
    return L.serial(*layers, L.Dense(1, W_std=1.5, b_std=0.05))


def run_case(n: int, depth: int, dtype: str, repeats: int) -> dict:
    dt = getattr(torch, dtype)
    x = torch.randn(n, 784, dtype=dt, generator=torch.Generator().manual_seed(0))
    net = mlp(depth)
    gemm = timeit(lambda: x @ x.T, repeats)
    kern = timeit(lambda: net.kernel_fn(x, get=("nngp", "ntk")), repeats)
    row = {"N": n, "depth": depth, "dtype": dtype, "kernel_s": kern["median_s"],
           "first_call_s": kern["first_s"], "gemm_s": gemm["median_s"],
           "kernel/gemm": kern["median_s"] / gemm["median_s"], "peak_rss_gb": peak_rss_gb()}
    peer = PEER.get((depth, n)) if dtype == "float32" else None
    if peer:
        row["nt_0.6.5_s"] = peer
        row["speedup_vs_nt"] = peer / kern["median_s"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    ap.add_argument("--depths", type=int, nargs="+", default=[3, 20])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--case", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.case:
        n, depth, dtype = args.case
        print(json.dumps(run_case(int(n), int(depth), dtype, args.repeats)))
        return
    rows = []
    for depth in args.depths:
        for n in args.sizes:
            for dtype in args.dtypes:
                out = subprocess.run([sys.executable, __file__, "--case", str(n), str(depth), dtype,
                                      "--repeats", str(args.repeats), "--threads", str(args.threads)],
                                     capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"  done N={n} depth={depth} {dtype}", file=sys.stderr)
    print_table(rows, ["N", "depth", "dtype", "kernel_s", "gemm_s", "kernel/gemm", "nt_0.6.5_s",
                       "speedup_vs_nt", "first_call_s", "peak_rss_gb"])
    if args.json:
        write_json(args.json, rows, benchmark="kernels")


if __name__ == "__main__":
    main()
