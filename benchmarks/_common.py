"""Shared benchmark helpers: timing, peak memory in a subprocess, tables, JSON."""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from typing import Callable

import torch


def machine() -> dict:
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def timeit(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Median and min wall time of warm calls; the first (warm-up) call is reported apart."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "first_s": first}


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print(" | ".join(c.ljust(widths[c]) for c in columns))
    print("-|-".join("-" * widths[c] for c in columns))
    for r in rows:
        print(" | ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write_json(path: str, rows: list[dict], **meta) -> None:
    with open(path, "w") as f:
        json.dump({"meta": {**machine(), **meta}, "rows": rows}, f, indent=2)
    print(f"wrote {path}")
