"""Empirical NTK benchmark: widelimit's implementations vs the torch.func tutorial recipes.

Cases (float32, CPU):
  * MLP 784-512-512-10, N=200, output axis traced (200, 200) and untraced (200, 200, 10, 10);
  * a small ResNet-18-like conv net (about 11.2 M parameters, 32x32x3 inputs, N=32), traced
    (and N=8, where Jacobian contraction fits in memory, to compare memory).

Methods: widelimit ``jacobian_contraction``, ``ntk_vector_products``, ``structured``, ``auto``
and the two recipes of the torch.func "Neural Tangent Kernels" tutorial, written as there:
``tutorial_jacobian_contraction`` (vmap(jacrev) + einsum) and ``tutorial_ntk_vps``
(vmap(vmap(vjp -> jvp)) over every pair of examples).

Each (case, method) runs in its own subprocess so that its peak memory (``ru_maxrss``, the
whole process including ~0.3 GB for importing torch) is its own; an address-space limit
turns an out-of-memory run into "OOM" instead of swapping the machine, and a wall-clock
limit turns a very slow one into "timeout". Seconds: a warm-up call on 2 examples first
(imports, lazy initialisation), then the median of up to 3 timed calls (1 when slow).

    python benchmarks/empirical.py            # full table
    python benchmarks/empirical.py --quick    # small smoke version
    python benchmarks/empirical.py --json out.json
    python benchmarks/empirical.py --peer-python /path/to/nt-venv/bin/python   # + neural-tangents
"""
from __future__ import annotations

import argparse
import json
import os
# opt in to widelimit's process-wide tuning (glibc malloc, OPENBLAS_THREAD_TIMEOUT) in this
# process and its subprocesses, so numbers stay comparable across runs; WIDELIMIT_TUNE_RUNTIME=0
# measures without (docs/benchmarks.md#runtime-tuning)
os.environ.setdefault("WIDELIMIT_TUNE_RUNTIME", "1")
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = ["jacobian_contraction", "ntk_vector_products", "structured", "auto"]
TUTORIAL = ["tutorial_jacobian_contraction", "tutorial_ntk_vps"]
PEER = "neural_tangents_structured"


# ---------------------------------------------------------------- models (worker side)
def _mlp(quick: bool):
    from torch import nn
    w = 64 if quick else 512
    return nn.Sequential(nn.Flatten(), nn.Linear(784, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                         nn.Linear(w, 10))


def _resnet(quick: bool):
    """ResNet-18 layout (2 basic blocks per stage, 64-128-256-512 channels) with a stride-2
    stem so that 32x32 inputs run at 16x16 in the first stage."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.short = nn.Sequential()
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           nn.BatchNorm2d(cout))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(h)) + self.short(x))

    chans = [8, 16, 32, 64] if quick else [64, 128, 256, 512]
    layers: list[nn.Module] = [nn.Conv2d(3, chans[0], 3, 2, 1, bias=False),
                               nn.BatchNorm2d(chans[0]), nn.ReLU()]
    cin = chans[0]
    for i, c in enumerate(chans):
        layers += [Block(cin, c, 1 if i == 0 else 2), Block(c, c, 1)]
        cin = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
    return nn.Sequential(*layers)


CASES = {
    "mlp_traced": dict(model=_mlp, shape=(1, 28, 28), n=200, n_quick=40, trace=True),
    "mlp_untraced": dict(model=_mlp, shape=(1, 28, 28), n=200, n_quick=40, trace=False),
    "resnet_traced": dict(model=_resnet, shape=(3, 32, 32), n=32, n_quick=8, trace=True),
    # the same net on fewer inputs, so that Jacobian contraction fits and its memory shows
    "resnet_traced_n8": dict(model=_resnet, shape=(3, 32, 32), n=8, n_quick=4, trace=True),
}


# ---------------------------------------------------------------- tutorial recipes
def _tutorial(method: str, net, x1, x2, trace: bool):
    """The torch.func tutorial's two recipes, as written there."""
    import torch
    from torch.func import functional_call, jacrev, jvp, vjp, vmap

    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = dict(net.named_buffers())

    def fnet_single(params, x):
        return functional_call(net, {**params, **buffers}, (x.unsqueeze(0),)).squeeze(0)

    if method == "tutorial_jacobian_contraction":
        jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x1)
        jac1 = [j.flatten(2) for j in jac1.values()]
        jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x2)
        jac2 = [j.flatten(2) for j in jac2.values()]
        expr = "Naf,Maf->NM" if trace else "Naf,Mbf->NMab"
        result = torch.stack([torch.einsum(expr, j1, j2) for j1, j2 in zip(jac1, jac2)])
        return result.sum(0)

    def get_ntk(x1, x2):
        def func_x1(params):
            return fnet_single(params, x1)

        def func_x2(params):
            return fnet_single(params, x2)

        output, vjp_fn = vjp(func_x1, params)

        def get_ntk_slice(vec):
            vjps = vjp_fn(vec)
            _, jvps = jvp(func_x2, (params,), vjps)
            return jvps

        basis = torch.eye(output.numel(), dtype=output.dtype).view(output.numel(), -1)
        return vmap(get_ntk_slice)(basis)

    result = vmap(vmap(get_ntk, (None, 0)), (0, None))(x1, x2)
    return torch.einsum("NMKK->NM", result) if trace else result


# ---------------------------------------------------------------- worker
def worker(case: str, method: str, quick: bool, out_path: str) -> None:
    import resource

    import numpy as np
    import torch

    sys.path.insert(0, ROOT)
    import widelimit as wl

    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 16)))
    spec = CASES[case]
    torch.manual_seed(0)
    net = spec["model"](quick).eval()
    n = spec["n_quick"] if quick else spec["n"]
    x = torch.randn(n, *spec["shape"])
    trace = spec["trace"]

    def run(xb):
        if method in TUTORIAL:
            with torch.no_grad():
                return _tutorial(method, net, xb, xb, trace)
        return wl.empirical_ntk(net, xb, trace_axes=(-1,) if trace else (),
                                implementation=method)

    run(x[:2])  # warm-up: imports and lazy initialisation
    times, k = [], None
    for _ in range(7):
        t0 = time.perf_counter()
        k = run(x)
        times.append(time.perf_counter() - t0)
        if sum(times) > 5.0:
            break
    k = k.detach().numpy()
    if method in TUTORIAL and trace:
        k = k / 10.0  # the tutorial sums over the traced axis; widelimit takes the mean
    np.save(out_path, k)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": statistics.median(times), "peak_rss_gb": rss_kb / 2**20,
                      "params": sum(p.numel() for p in net.parameters())}))


def nt_worker(case: str, quick: bool) -> None:
    """neural-tangents' structured derivatives on the same MLP case (run with --peer-python).

    Uses only neural-tangents' public API (stax + empirical_ntk_fn), jit-compiled; the first
    call (compilation) is excluded, as in ../shared/PEER-BASELINE.md.
    """
    import resource

    import jax
    import neural_tangents as nt
    from neural_tangents import stax

    spec = CASES[case]
    if not case.startswith("mlp"):
        raise SystemExit("neural-tangents peer runs only the MLP cases here")
    w = 64 if quick else 512
    init_fn, apply_fn, _ = stax.serial(stax.Flatten(), stax.Dense(w), stax.Relu(), stax.Dense(w),
                                       stax.Relu(), stax.Dense(10))
    n = spec["n_quick"] if quick else spec["n"]
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (n, 28, 28, 1))
    _, params = init_fn(key, x.shape)
    fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,) if spec["trace"] else (),
                                     vmap_axes=0,
                                     implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES))
    fn(x, None, params).block_until_ready()  # compile
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        fn(x, None, params).block_until_ready()
        times.append(time.perf_counter() - t0)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": statistics.median(times), "peak_rss_gb": rss_kb / 2**20}))


def _limit_memory(gb: float):
    def set_limit():
        import resource
        b = int(gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (b, b))
    return set_limit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small models and N (smoke test)")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--methods", nargs="*", default=OURS + TUTORIAL)
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per run")
    ap.add_argument("--mem-limit-gb", type=float, default=14.0,
                    help="address-space limit per run (an OOM is reported, not swapped)")
    ap.add_argument("--peer-python", metavar="PYTHON",
                    help="an interpreter with neural-tangents 0.6.5 (see ../shared/PEER-BASELINE.md):"
                         " adds its structured derivatives on the MLP cases, in the same run")
    ap.add_argument("--worker", nargs=3, metavar=("CASE", "METHOD", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--nt-worker", metavar="CASE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.nt_worker:
        nt_worker(args.nt_worker, args.quick)
        return
    if args.worker:
        worker(args.worker[0], args.worker[1], args.quick, args.worker[2])
        return

    import numpy as np
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            ref = None
            methods = list(args.methods)
            if args.peer_python and case.startswith("mlp"):
                methods.append(PEER)
            for method in methods:
                out = os.path.join(tmp, f"{case}-{method}.npy")
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", case, method, out]
                if method == PEER:
                    cmd = [args.peer_python, os.path.abspath(__file__), "--nt-worker", case]
                if args.quick:
                    cmd.append("--quick")
                row = {"case": case, "method": method}
                try:
                    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                       preexec_fn=_limit_memory(args.mem_limit_gb))
                    if p.returncode == 0:
                        row.update(json.loads(p.stdout.strip().splitlines()[-1]))
                        if method == PEER:
                            rows.append(row)
                            _print_row(row)
                            continue
                        k = np.load(out)
                        if ref is None and method == "structured":
                            ref = k
                        if ref is not None:
                            row["max_rel_diff"] = float(np.abs(k - ref).max() / np.abs(ref).max())
                    else:
                        err = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
                        oom = ("memory" in err.lower() or "alloc" in err.lower()
                               or p.returncode in (-9, 137))
                        row["status"] = (f"OOM (>{args.mem_limit_gb:g} GB)" if oom
                                         else f"error: {err[:80]}")
                except subprocess.TimeoutExpired:
                    row["status"] = f"timeout (>{args.timeout:g} s)"
                rows.append(row)
                _print_row(row)
    _print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"quick": args.quick, "rows": rows, "cpu_count": os.cpu_count()}, f,
                      indent=2)


def _fmt(row: dict) -> str:
    if "seconds" not in row:
        return f"| {row['case']} | {row['method']} | {row.get('status', '?')} | | |"
    diff = row.get("max_rel_diff")
    return (f"| {row['case']} | {row['method']} | {row['seconds']:.3f} | "
            f"{row['peak_rss_gb']:.2f} | {'' if diff is None else f'{diff:.1e}'} |")


def _print_row(row: dict) -> None:
    print(_fmt(row), file=sys.stderr, flush=True)


def _print_table(rows: list[dict]) -> None:
    print("| case | method | seconds | peak RSS GB | max rel diff vs structured |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(_fmt(row))
    # ratios: each widelimit method vs the best tutorial recipe of its case
    print()
    for case in dict.fromkeys(r["case"] for r in rows):
        tut = [r["seconds"] for r in rows if r["case"] == case and r["method"] in TUTORIAL
               and "seconds" in r]
        if not tut:
            if any(r["case"] == case and r["method"] in TUTORIAL for r in rows):
                print(f"{case}: every tutorial recipe failed (OOM or timeout)")
            continue
        best = min(tut)
        for r in rows:
            if r["case"] == case and r["method"] in OURS and "seconds" in r:
                print(f"{case}: {r['method']} is {best / r['seconds']:.1f}x faster than the best "
                      f"tutorial recipe ({best:.3f} s)")
    for case in dict.fromkeys(r["case"] for r in rows):
        peer = [r["seconds"] for r in rows if r["case"] == case and r["method"] == PEER
                and "seconds" in r]
        for r in rows:
            if peer and r["case"] == case and r["method"] in ("structured", "auto") \
                    and "seconds" in r:
                print(f"{case}: {r['method']} takes {r['seconds'] / peer[0]:.1f}x the time of "
                      f"neural-tangents' structured derivatives ({peer[0]:.3f} s)")


if __name__ == "__main__":
    main()
