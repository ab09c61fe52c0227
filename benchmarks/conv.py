"""CNN-GP / CNTK benchmark: 3 x [Conv(64, 3x3, SAME), Relu], GlobalAvgPool, Dense(1).

NNGP + NTK of x (N, 3, H, W) against itself, float32, on CPU, the architecture of the
neural-tangents baseline in ../shared/PEER-BASELINE.md (4.0 s / 16.1 s / 70.9 s and
1.3 / 2.8 / 9.0 GB for N = 16 / 32 / 64 on 16x16x3).  Each case runs in a fresh
subprocess so its peak resident memory (ru_maxrss, whole process, includes ~0.3 GB of
torch import) is its own; seconds are the median of warm calls after one warm-up.

FLOP count: every tensor operation of the computation over all N^2 pairs is counted
exactly on a 4-image call by a dispatch mode (elementwise op: 1 per output element,
including atan2/sqrt; einsum/matmul: 2 m n k), divided by 16 pairs and scaled by N^2.
(The blocked computation for x against itself does only about half of it: blocks below
the diagonal are mirrored.)  The
roofline column divides seconds by flops / 250 GFLOP/s, this machine's measured float32
GEMM rate, so it is the factor above a compute-bound ideal.

    python benchmarks/conv.py [--json PATH] [--repeat 2] [--max-memory 4GB] [--nt 16:16,16:32]
    (BENCH_THREADS=1 to pin torch to one thread)
"""
from __future__ import annotations

import argparse
import json
import os
# opt in to widelimit's process-wide tuning (glibc malloc, OPENBLAS_THREAD_TIMEOUT) in this
# process and its subprocesses, so numbers stay comparable across runs; WIDELIMIT_TUNE_RUNTIME=0
# measures without (docs/benchmarks.md#runtime-tuning)
os.environ.setdefault("WIDELIMIT_TUNE_RUNTIME", "1")
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

CASES = [(16, 16), (16, 32), (16, 64), (16, 128), (32, 32), (32, 64)]
NT = {(16, 16): (3.96, 1.30), (16, 32): (16.1, 2.85), (16, 64): (70.9, 9.0)}
GEMM_FLOPS = 250e9


def network():
    from widelimit import layers as L
    layers = []
    for _ in range(3):
        layers += [L.Conv(64, (3, 3), padding="SAME", W_std=1.5, b_std=0.05), L.Relu()]
    return L.serial(*layers, L.GlobalAvgPool(), L.Dense(1, W_std=1.5, b_std=0.05))


def count_flops(hw: int) -> float:
    """Exact op count of the kernel computation per pair of images."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.__name__
            if name.startswith(("mm", "bmm", "addmm")):
                a, b = args[-2], args[-1]
                Count.flops += 2 * a.numel() * b.shape[-1]
            elif isinstance(out, torch.Tensor) and not name.startswith(
                    ("view", "_unsafe_view", "expand", "permute", "slice", "select", "diagonal",
                     "t.", "transpose", "unsqueeze", "squeeze", "alias", "detach", "clone",
                     "copy", "empty", "new_empty", "zeros", "new_zeros", "index_select", "cat",
                     "lift", "_to_copy")):
                Count.flops += out.numel()
            return out

    x = torch.randn(4, 3, hw, hw)
    import widelimit.scale.blocking as blocking
    cache, blocking.CACHE_ELEMENTS = blocking.CACHE_ELEMENTS, 2**40   # one block: all N^2 pairs
    with Count():
        network().kernel_fn(x, None, get=("nngp", "ntk"), diagonal_spatial=False, max_memory="64GB")
    blocking.CACHE_ELEMENTS = cache
    return Count.flops / 16


def run_case(hw: int, n: int, repeat: int, max_memory) -> dict:
    import torch
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    x = torch.randn(n, 3, hw, hw, generator=torch.Generator().manual_seed(0))
    net = network()
    times, cpu = [], []
    for i in range(repeat + 1 if repeat else 1):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        out = net.kernel_fn(x, None, get=("nngp", "ntk"), max_memory=max_memory)
        dt = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        if i or not repeat:       # --repeat 0: time the first (cold) call only
            times.append(dt)
            cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    assert out.ntk.shape == (n, n) and bool(torch.isfinite(out.ntk).all())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"hw": hw, "n": n, "threads": torch.get_num_threads(), "seconds": statistics.median(times),
            "cpu_seconds": statistics.median(cpu), "peak_rss_gb": rss / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write results to this path")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--max-memory", default=None)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--cases", default=None, help="e.g. 16:64,32:32 (default: all)")
    ap.add_argument("--nt", default=None, help="also run neural-tangents (peer env python) on these "
                    "cases right after ours, e.g. 16:16,16:32; PEER_PYTHON names its interpreter")
    ap.add_argument("--flops", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.flops:
        print(json.dumps({hw: count_flops(int(hw)) for hw in args.flops.split(",")}))
        return
    if args.case:
        hw, n = map(int, args.case.split(":"))
        print(json.dumps(run_case(hw, n, args.repeat, args.max_memory)))
        return
    cases = CASES if not args.cases else [tuple(map(int, c.split(":"))) for c in args.cases.split(",")]
    # Linux carries a process's peak RSS across exec into its children's ru_maxrss, so the
    # FLOP count (which imports torch and runs a network) is taken in a subprocess too,
    # keeping this parent small: each case's peak memory is then its own.
    flops_per_pair = json.loads(subprocess.run(
        [sys.executable, __file__, "--flops", ",".join(str(hw) for hw in sorted({c[0] for c in cases}))],
        check=True, capture_output=True, text=True).stdout)
    flops_per_pair = {int(k): v for k, v in flops_per_pair.items()}
    rows = []
    for hw, n in cases:
        cmd = [sys.executable, __file__, "--case", f"{hw}:{n}", "--repeat", str(args.repeat)]
        if args.max_memory:
            cmd += ["--max-memory", args.max_memory]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        res["flops"] = flops_per_pair[hw] * n * n
        res["gflops_per_s"] = res["flops"] / res["seconds"] / 1e9
        res["roofline_factor"] = res["seconds"] / (res["flops"] / GEMM_FLOPS)
        if (hw, n) in NT:
            res["nt_seconds"], res["nt_peak_rss_gb"] = NT[(hw, n)]
            res["speedup_vs_nt"] = NT[(hw, n)][0] / res["seconds"]
            res["memory_ratio_vs_nt"] = res["peak_rss_gb"] / NT[(hw, n)][1]
        nt_cases = [] if not args.nt else [tuple(map(int, c.split(":"))) for c in args.nt.split(",")]
        if (hw, n) in nt_cases:
            peer = os.environ.get("PEER_PYTHON", "/work/venv-peers/bin/python")
            script = os.path.join(os.path.dirname(__file__), "peers", "nt_conv.py")
            nt = json.loads(subprocess.run([peer, script, str(hw), str(n), str(args.repeat)], check=True,
                                           capture_output=True, text=True).stdout.splitlines()[-1])
            res["nt_same_run"] = nt
            res["speedup_vs_nt_same_run"] = nt["seconds"] / res["seconds"]
            res["cpu_speedup_vs_nt_same_run"] = nt["cpu_seconds"] / res["cpu_seconds"]
            print(f"    neural-tangents in the same run: {nt['seconds']:.2f} s ({nt['cpu_seconds']:.2f} "
                  f"CPU s), {nt['peak_rss_gb']:.2f} GB -> {res['speedup_vs_nt_same_run']:.1f}x "
                  f"(CPU time {res['cpu_speedup_vs_nt_same_run']:.1f}x)", flush=True)
        rows.append(res)
        print(f"{hw}x{hw}x3 N={n:4d}: {res['seconds']:8.3f} s ({res['cpu_seconds']:.2f} CPU s, "
              f"{res['threads']} threads) {res['peak_rss_gb']:5.2f} GB  "
              f"{res['flops'] / 1e9:9.2f} GFLOP  {res['gflops_per_s']:6.2f} GFLOP/s"
              + (f"  NT {res['nt_seconds']} s / {res['nt_peak_rss_gb']} GB: "
                 f"{res['speedup_vs_nt']:.1f}x faster, {res['memory_ratio_vs_nt']:.2f}x memory"
                 if "nt_seconds" in res else ""), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cases": rows, "flops_per_pair": flops_per_pair}, f, indent=2)


if __name__ == "__main__":
    main()
