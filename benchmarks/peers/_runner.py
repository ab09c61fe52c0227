"""The protocol shared by ``wl_cases.py`` and ``nt_cases.py`` (standard library + NumPy only).

    <python> benchmarks/peers/{wl,nt}_cases.py --cases NAME [NAME ...] [--quick] --dtype float32
        --repeats 5 --budget-s 30 --threads 2 --outdir DIR

For each case: one first call (includes torch.compile / jit compile time), then up to
``--repeats`` warm calls (fewer if they would exceed ``--budget-s``); prints one JSON line
per case (prefixed ``RESULT ``) with the median/min warm seconds, the first-call seconds,
the process's peak RSS so far (``resource.getrusage``; run one case per process for a
per-case figure) and the path of an .npz holding the result arrays for the agreement check.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import all_cases  # noqa: E402


def flatten(obj, array_types: tuple, prefix: str = "") -> dict:
    """Nested tuples / namedtuples / dicts of arrays -> {"a/b": array} (either library)."""
    if isinstance(obj, array_types):
        return {prefix or "out": obj}
    if isinstance(obj, dict):
        items = obj.items()
    elif hasattr(obj, "_fields"):
        items = zip(obj._fields, obj)
    elif isinstance(obj, (tuple, list)):
        items = enumerate(obj)
    else:
        raise TypeError(f"cannot flatten {type(obj)}")
    out = {}
    for k, v in items:
        out.update(flatten(v, array_types, f"{prefix}/{k}" if prefix else str(k)))
    return out


def rss_gb() -> float:
    """Peak resident memory of this process, GB.  On Linux the high-water mark of its own
    address space (``VmHWM``): ``ru_maxrss`` survives ``execve`` and so includes the
    parent's memory at the fork (compare.py's own, which grows with the results it has
    checked; every row of a run once read 0.66 GB that way)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6   # KiB on Linux


def measure(fn, sync, repeats: int, budget_s: float) -> dict:
    t = time.perf_counter()
    out = sync(fn())
    first = time.perf_counter() - t
    # a first call longer than twice the budget is the only one (reported as such)
    n_warm = 0 if repeats == 0 or first > 2 * budget_s else \
        max(1, min(repeats, int(budget_s // max(first, 1e-9))))
    times = [] if n_warm else [first]
    for _ in range(n_warm):
        t = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "first_s": first,
            "times": times, "first_call_only": n_warm == 0, "out": out}


def main(lib: str, prepare, sync, to_numpy, setup=None) -> None:
    """prepare(case, dtype) -> zero-argument fn returning a dict of arrays (or raises
    NotImplementedError(reason) when the library lacks a layer)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="+", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--outdir", required=True)
    args = ap.parse_args()
    versions = setup(args) if setup else {}
    cases = {c.name: c for c in all_cases(args.quick)}
    rss_import = rss_gb()
    for name in args.cases:
        row = {"lib": lib, "case": name, "versions": versions, "rss_import_gb": rss_import}
        try:
            fn = prepare(cases[name], args.dtype)
            m = measure(fn, sync, args.repeats, args.budget_s)
            arrays = {k: to_numpy(v) for k, v in m.pop("out").items()}
            path = os.path.join(args.outdir, f"{lib}_{name}.npz")
            np.savez(path, **arrays)
            row.update(m, npz=path, status="ok")
        except NotImplementedError as e:
            row.update(status="skipped", reason=str(e))
        except Exception as e:  # report, keep going with the other cases
            row.update(status="error", reason=f"{type(e).__name__}: {e}",
                       traceback=traceback.format_exc()[-2000:])
        row["peak_rss_gb"] = rss_gb()
        print("RESULT " + json.dumps(row), flush=True)
