"""Spatial blocking benchmark: image kernels whose single pair does not fit the budget.

Network of benchmarks/conv.py (3 x [Conv(64, 3x3, SAME), Relu], GlobalAvgPool, Dense(1)),
NNGP + NTK of x (N, 3, H, W) against itself, float32, CPU.  One pair of 64x64 images
holds 64^4 = 16.8M entries per full spatial tensor, so the unblocked planner needs about
3 x 10 x 16.8M x 4 B = 2 GB for one pair; with a smaller ``--budget`` the kernel is
computed in bands of rows (widelimit.scale.spatial).  Each mode runs in a fresh
subprocess: wall and CPU seconds of one call after ``--warmup`` untimed ones, peak resident
memory of the process (ru_maxrss, includes ~0.36 GB of imports and what glibc keeps after
frees), and the peak of the bytes the allocator held during the timed call (glibc
mallinfo2 polled every millisecond; all threads).  The unblocked mode runs with ``spatial_blocking=False`` and a budget it fits.

    python benchmarks/spatial.py [--hw 64] [--n 1] [--budget 256MB] [--warmup 1] [--json PATH]
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
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))


class Sampler:
    """Polls the allocator's bytes in use (all threads) every millisecond; ``peak`` above
    the value at start."""

    def __init__(self):
        import threading
        import torch
        from widelimit.scale.blocking import bytes_in_use
        self.read = lambda: bytes_in_use(torch.device("cpu"))
        self.base = self.read()
        self.peak = 0 if self.base is not None else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(1e-3):
            self.peak = max(self.peak, self.read() - self.base)

    def __enter__(self):
        if self.peak is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.peak is not None:
            self._thread.join()


def run_mode(hw: int, n: int, mode: str, budget: str, warmup: int) -> dict:
    import torch
    from conv import network
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    x = torch.randn(n, 3, hw, hw, generator=torch.Generator().manual_seed(0))
    kw = (dict(max_memory=budget) if mode == "spatial"
          else dict(max_memory="64GB", spatial_blocking=False))
    first = None
    for _ in range(warmup):          # torch.compile of the nonlinearities' rules, caches
        t0 = time.perf_counter()
        network().kernel_fn(x, None, get=("nngp", "ntk"), **kw)
        first = time.perf_counter() - t0
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    with Sampler() as sampler:
        out = network().kernel_fn(x, None, get=("nngp", "ntk"), **kw)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"hw": hw, "n": n, "mode": mode, "budget": budget if mode == "spatial" else None,
            "threads": torch.get_num_threads(), "seconds": dt, "first_call_seconds": first,
            "cpu_seconds": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime,
            "peak_rss_gb": r1.ru_maxrss * 1024 / 1e9,
            "allocator_peak_gb": None if sampler.peak is None else sampler.peak / 1e9,
            "ntk": out.ntk.tolist(), "nngp": out.nngp.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hw", type=int, default=64)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--budget", default="256MB")
    ap.add_argument("--modes", default="spatial,unblocked")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls before the timed one")
    ap.add_argument("--json", help="write results to this path")
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.hw, args.n, args.mode, args.budget, args.warmup)))
        return
    rows = []
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--mode", mode, "--hw", str(args.hw), "--n", str(args.n),
               "--budget", args.budget, "--warmup", str(args.warmup)]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        rows.append(res)
        print(f"{args.hw}x{args.hw}x3 N={args.n} {mode:9s} "
              f"{'budget ' + args.budget if mode == 'spatial' else 'one block':13s}: "
              f"{res['seconds']:7.2f} s ({res['cpu_seconds']:.2f} CPU s, {res['threads']} threads), "
              f"peak RSS {res['peak_rss_gb']:.2f} GB, allocator peak "
              f"{res['allocator_peak_gb'] or float('nan'):.3f} GB", flush=True)
    if len(rows) == 2:
        import numpy as np
        a, b = (np.array(r["ntk"]) for r in rows)
        print(f"max relative difference of the NTKs: {np.abs(a - b).max() / np.abs(b).max():.1e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cases": rows}, f, indent=2)


if __name__ == "__main__":
    main()
