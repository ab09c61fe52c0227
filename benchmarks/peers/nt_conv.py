"""neural-tangents 0.6.5 on the CNN of benchmarks/conv.py (run in the peer environment).

    /work/venv-peers/bin/python benchmarks/peers/nt_conv.py HW N   -> one JSON line
Float32, jit-compiled, first call (compile) excluded, median of warm calls; peak RSS
of the whole process.
"""
import json
import resource
import statistics
import sys
import time

import jax
import numpy as np
from neural_tangents import stax

hw, n = int(sys.argv[1]), int(sys.argv[2])
repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 2
layers = []
for _ in range(3):
    layers += [stax.Conv(64, (3, 3), padding="SAME", W_std=1.5, b_std=0.05), stax.Relu()]
_, _, kernel_fn = stax.serial(*layers, stax.GlobalAvgPool(), stax.Dense(1, W_std=1.5, b_std=0.05))
kernel_fn = jax.jit(kernel_fn, static_argnames="get")
x = np.random.default_rng(0).standard_normal((n, hw, hw, 3)).astype(np.float32)
times = []
for i in range(repeat + 1):
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    k = kernel_fn(x, None, get=("nngp", "ntk"))
    k.ntk.block_until_ready()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    if i:
        times.append((time.perf_counter() - t0, r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime))
wall = statistics.median(t[0] for t in times)
cpu = statistics.median(t[1] for t in times)
print(json.dumps({"hw": hw, "n": n, "seconds": wall, "cpu_seconds": cpu,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}))
