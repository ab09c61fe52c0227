"""Scale benchmarks (issue 13): out-of-core kernels, Dask, large-N solvers, random features.

    python benchmarks/scale.py [--cases store dask solvers features] [--json out.json]
                               [case options, see --help]

Cases (benchmarks/scale_cases/):

* ``store``: ``wl.compute_kernel`` of a float32, d = 784, depth-3 ReLU NTK out of core at
  N = 20 000 and 60 000 under ``max_memory="4GB"``: wall time, peak RSS against the budget,
  entries/s against the in-memory ``kernel_fn`` rate measured in the same run;
* ``dask``: the same call on a ``LocalCluster`` of 2 worker processes against one process;
* ``solvers``: Falkon kernel regression at N = 60 000 (time to relative residual 1e-4) and
  its test error against exact KRR on a 10 000 subset;
* ``features``: random-feature ridge regression at N = 200 000 (``--features-1m``:
  1 000 000) with a memmap of features: time and peak RSS.

Each case prints its table; ``--json`` writes all rows with the machine description.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

# the same process tuning as benchmarks/kernels.py, so in-memory rates are comparable
os.environ.setdefault("WIDELIMIT_TUNE_RUNTIME", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _common import print_table, write_json  # noqa: E402
from scale_cases import dask as dask_case  # noqa: E402
from scale_cases import features, solvers, store  # noqa: E402

CASES = {"store": store, "dask": dask_case, "solvers": solvers, "features": features}
COLUMNS = {
    "store": ["case", "n", "seconds", "peak_rss_gb", "budget_gb", "under_budget", "block_size",
              "Mentries_per_s", "vs_in_memory"],
    "dask": ["case", "n", "block_size", "blocks", "seconds", "Mentries_per_s", "speedup",
             "startup_s", "bit_identical"],
    "solvers": ["case", "n", "n_centers", "seconds", "iterations", "residual", "test_error",
                "rel_diff_vs_exact"],
    "features": ["case", "n", "features", "seconds", "features_s", "fit_s", "rows_per_s",
                 "train_mse", "target_var", "peak_rss_mb"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--json", metavar="PATH", help="write all rows as JSON")
    for mod in CASES.values():
        mod.add_arguments(ap)
    args = ap.parse_args()
    rows = []
    for name in args.cases:
        t0 = time.perf_counter()
        print(f"\n== {name}", flush=True)
        got = CASES[name].run(args)
        print_table(got, COLUMNS[name])
        print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
        rows += [{"benchmark": name, **r} for r in got]
    if args.json:
        write_json(args.json, rows, args=vars(args))


if __name__ == "__main__":
    main()
