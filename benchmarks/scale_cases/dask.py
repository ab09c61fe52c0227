"""``compute_kernel`` on a Dask ``LocalCluster`` (2 worker processes, loopback) against one
process, on the same machine and inputs (float32, d = 784, depth-3 ReLU NTK).

Rows: ``one_process`` (torch's default threads), ``local_cluster`` (``--dask-workers``
workers of one thread each; the cluster's start-up is reported apart, not timed).  On a
2-core machine the ceiling is the speed-up of 2 threads over torch's own 2-thread
kernels, i.e. about 1: the row measures the cluster's overhead (scatter, scheduling, one
task per block) rather than a gain.  ``benchmarks/scale.py`` runs ``run(args)``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("dask (LocalCluster)")
    g.add_argument("--dask-n", type=int, default=12_000, help="N of the kernel")
    g.add_argument("--dask-block", type=int, default=2_000, help="block_size (rows per task)")
    g.add_argument("--dask-workers", type=int, default=2, help="worker processes")


def run(args: argparse.Namespace) -> list[dict]:
    import numpy as np
    from dask.distributed import Client, LocalCluster

    import widelimit as wl
    from scale_cases.store import inputs, net
    n, bs = args.dask_n, args.dask_block
    x, f = inputs(n), net().kernel_fn
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        one = wl.compute_kernel(f, x, out=os.path.join(tmp, "one.zarr"), get="ntk", block_size=bs)
        t_one = time.perf_counter() - t0
        rows.append({"case": "one_process", "n": n, "block_size": bs, "blocks": one.blocks_total,
                     "seconds": round(t_one, 2), "Mentries_per_s": round(n * n / t_one / 1e6, 1),
                     "speedup": 1.0})
        t0 = time.perf_counter()
        with LocalCluster(n_workers=args.dask_workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster, \
                Client(cluster) as client:
            startup = time.perf_counter() - t0
            t0 = time.perf_counter()
            dist = wl.compute_kernel(f, x, out=os.path.join(tmp, "dask.zarr"), get="ntk",
                                     block_size=bs, client=client)
            t_dask = time.perf_counter() - t0
        same = bool(np.array_equal(one.to_numpy("ntk"), dist.to_numpy("ntk")))
        rows.append({"case": f"local_cluster_{args.dask_workers}x1", "n": n, "block_size": bs,
                     "blocks": dist.blocks_total, "seconds": round(t_dask, 2),
                     "Mentries_per_s": round(n * n / t_dask / 1e6, 1),
                     "speedup": round(t_one / t_dask, 2), "startup_s": round(startup, 1),
                     "bit_identical": same})
    return rows


if __name__ == "__main__":
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = argparse.ArgumentParser(description=__doc__)
    add_arguments(p)
    for row in run(p.parse_args()):
        print(row)
