"""widelimit vs neural-tangents 0.6.5, side by side, measured in one run.

    benchmarks/peers/setup                          # once: creates .venv-peers (NT 0.6.5, JAX 0.4.23)
    .venv/bin/python benchmarks/compare.py [--quick] [--cases fc3 entk ...] [--json out/compare.json]

Every case runs in both libraries, in fresh subprocesses (so each peak RSS is the case's
own), alternating which library goes first from round to round.  In each subprocess the
first call (torch.compile / XLA compile included) is reported apart; then up to
``--repeats`` warm calls are timed.  The table shows median warm seconds over all rounds,
the speed-up ``NT s / widelimit s`` (> 1: widelimit is faster), peak RSS of each process
(including the import of torch, resp. JAX + TensorFlow) and whether the results agree
(``max |wl - nt| / max |nt|`` per output, 1e-3 in float32, 1e-6 in float64): a result
that disagrees is flagged and its speed-up does not count.

Expensive cases are capped by time: before each run the per-call time is estimated from
the cheapest case of the same family already measured in this run (its N^2 (HW)^2
scaling for convolutions), and a run estimated above ``--max-call-s`` is not started; the
table then says "not run (would take ~X s ...)".  Cases whose layers are not in widelimit
yet are reported as "skipped: not available".  ``--quick`` runs tiny sizes in one process
per library (< 2 minutes; its RSS figures are then cumulative).
See docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
# opt in to widelimit's process-wide tuning (glibc malloc, OPENBLAS_THREAD_TIMEOUT) in this
# process and its subprocesses, so numbers stay comparable across runs; WIDELIMIT_TUNE_RUNTIME=0
# measures without (docs/benchmarks.md#runtime-tuning)
os.environ.setdefault("WIDELIMIT_TUNE_RUNTIME", "1")
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "peers"))
from cases import all_cases  # noqa: E402

import numpy as np  # noqa: E402

LIBS = ("widelimit", "neural_tangents")
SHORT = {"widelimit": "wl", "neural_tangents": "nt"}
TOL = {"float32": 1e-3, "float64": 1e-6}


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one process per library (< 2 min)")
    ap.add_argument("--cases", nargs="+", default=["*"],
                    help="case names or globs / substrings, e.g. fc3 'cnn_gap_16*' entk (default: all)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 2; --quick 1)")
    ap.add_argument("--repeats", type=int, default=None, help="warm calls per process (default 10; --quick 3)")
    ap.add_argument("--budget-s", type=float, default=20.0, help="at most this many seconds of warm calls per process")
    ap.add_argument("--max-call-s", type=float, default=40.0,
                    help="do not start a neural-tangents run whose estimated per-call time exceeds this")
    ap.add_argument("--wl-max-call-s", type=float, default=240.0,
                    help="the same for widelimit")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (widelimit)")
    ap.add_argument("--omp-wait-policy", choices=("passive", "active", "unset"), default="passive",
                    help="OMP_WAIT_POLICY for the widelimit process: on a loaded machine torch's "
                         "spinning OpenMP threads thrash (100x slower), 'passive' avoids it")
    ap.add_argument("--timeout-s", type=float, default=900.0, help="kill a case's process after this")
    ap.add_argument("--wl-python", default=sys.executable)
    ap.add_argument("--peer-python", default=os.environ.get("WIDELIMIT_PEER_PYTHON",
                                                            os.path.join(ROOT, ".venv-peers", "bin", "python")))
    ap.add_argument("--json", metavar="PATH", help="write results (rewritten after every case)")
    a = ap.parse_args()
    a.rounds = a.rounds or (1 if a.quick else 2)
    a.repeats = a.repeats or (3 if a.quick else 10)
    return a


def selected(cases, patterns):
    out = []
    for c in cases:
        if any(fnmatch.fnmatch(c.name, p) or (p in c.name) for p in patterns):
            out.append(c)
    return out


def run_procs(lib: str, names: list[str], a, outdir: str, dtype: str | None = None,
              repeats: int | None = None) -> dict[str, dict]:
    py = a.wl_python if lib == "widelimit" else a.peer_python
    script = os.path.join(HERE, "peers", "wl_cases.py" if lib == "widelimit" else "nt_cases.py")
    if dtype:
        outdir = os.path.join(outdir, dtype)
        os.makedirs(outdir, exist_ok=True)
    cmd = [py, script, "--cases", *names, "--dtype", dtype or a.dtype,
           "--repeats", str(a.repeats if repeats is None else repeats),
           "--budget-s", str(a.budget_s), "--threads", str(a.threads), "--outdir", outdir]
    if a.quick:
        cmd.append("--quick")
    env = dict(os.environ)
    if lib == "widelimit":
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        if a.omp_wait_policy != "unset":
            env["OMP_WAIT_POLICY"] = a.omp_wait_policy.upper()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    wall = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.timeout_s)
        stdout, stderr = p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = f"timed out after {a.timeout_s:.0f} s"
    except FileNotFoundError as e:
        stdout, stderr = "", f"cannot start {py}: {e} (run benchmarks/peers/setup)"
    res = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            res[r["case"]] = r
    for n in names:
        if n not in res:
            res[n] = {"lib": lib, "case": n, "status": "error",
                      "reason": (stderr.strip().splitlines() or ["no output"])[-1][:300]}
    res["_wall_s"] = time.perf_counter() - wall
    return res


def agreement(wl_npz: str, nt_npz: str, tol: float) -> dict:
    a, b = np.load(wl_npz), np.load(nt_npz)
    keys = sorted(set(a.files) & set(b.files))
    if not keys:
        return {"ok": False, "max_rel_err": None, "tol": tol,
                "note": f"no common outputs: {a.files} vs {b.files}"}
    errs = {}
    for k in keys:
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        if x.size == y.size and x.shape != y.shape:
            x = x.reshape(y.shape)
        if x.shape != y.shape:
            errs[k] = float("inf")
            continue
        scale = max(float(np.max(np.abs(y))), 1e-300)
        errs[k] = float(np.max(np.abs(x - y))) / scale
    worst = max(errs.values())
    return {"ok": bool(worst <= tol), "max_rel_err": worst, "tol": tol, "per_output": errs}


def estimate(case, lib: str, rows: list[dict]) -> float | None:
    """Per-call seconds for `case` in `lib` scaled from the same family's cases run so far."""
    best = None
    for r in rows:
        m = r[SHORT[lib]]
        if r["family"] != case.family or m.get("status") != "ok" or not r.get("work"):
            continue
        t = m["median_s"] * case.work / r["work"]
        if best is None or r["work"] > best[0]:     # the largest measured anchor
            best = (r["work"], t)
    if best:
        return best[1]
    if lib == "neural_tangents" and case.published_nt_s:
        return case.published_nt_s
    return None


def merge_runs(runs: list[dict]) -> dict:
    ok = [r for r in runs if r.get("status") == "ok"]
    if not ok:
        return runs[-1] if runs else {"status": "error", "reason": "not run"}
    times = [t for r in ok for t in r["times"]]
    return {"status": "ok", "median_s": statistics.median(times), "min_s": min(times),
            "first_s": statistics.median([r["first_s"] for r in ok]),
            "n_timed": len(times), "peak_rss_gb": max(r["peak_rss_gb"] for r in ok),
            "rss_import_gb": ok[0].get("rss_import_gb"), "npz": ok[-1]["npz"],
            "first_call_only": all(r.get("first_call_only") for r in ok),
            "versions": ok[0].get("versions", {})}


def meta(a, versions: dict) -> dict:
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = None
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.machine(),
            "cpu": cpu, "cpus": os.cpu_count(), "mem_gib": round(mem, 1) if mem else None,
            "python": platform.python_version(), "dtype": a.dtype, "rounds": a.rounds,
            "repeats": a.repeats, "threads": a.threads, "omp_wait_policy": a.omp_wait_policy,
            "quick": a.quick, "max_call_s": a.max_call_s, "wl_max_call_s": a.wl_max_call_s,
            "budget_s": a.budget_s, "versions": versions}


def fmt_s(m: dict, est: float | None = None) -> str:
    if m.get("status") == "ok":
        return f"{m['median_s']:.4g}" + (" (1st only)" if m.get("first_call_only") else "")
    if m.get("status") == "not_run":
        return f"not run (~{m['estimate_s']:.3g} s)"
    return m.get("status", "?")


def summarize(r: dict) -> None:
    wl, nt = r["wl"], r["nt"]
    if wl.get("status") == "ok" and nt.get("status") == "ok":
        r["speedup"] = nt["median_s"] / wl["median_s"]
    elif wl.get("status") == "ok" and nt.get("status") == "not_run":
        r["speedup_estimated"] = nt["estimate_s"] / wl["median_s"]


def agree_str(ag: dict) -> str:
    if not ag:
        return ""
    if ag["ok"]:
        return f"ok {ag['max_rel_err']:.1e}"
    if ag.get("max_rel_err") is None:
        return "NO (" + ag.get("note", "") + ")"
    s = f"NO {ag['max_rel_err']:.1e}"
    if "wl_vs_float64" in ag:
        s += (f"; vs float64: wl {ag['wl_vs_float64']:.1e}, NT {ag['nt_vs_float64']:.1e}"
              + (" (wl correct)" if ag.get("wl_correct") else " (wl WRONG)"))
    return s


def print_table(rows: list[dict]) -> None:
    cols = ["case", "wl s", "NT s", "NT/wl", "wl 1st s", "NT 1st s", "wl RSS GB", "NT RSS GB", "agree"]
    lines = []
    for r in rows:
        wl, nt = r["wl"], r["nt"]
        sp = f"{r['speedup']:.3g}" if "speedup" in r else (
            f"~{r['speedup_estimated']:.3g} est" if "speedup_estimated" in r else "")
        ag = r.get("agreement") or {}
        agree = agree_str(ag)
        g = lambda m, k, f="{:.3g}": f.format(m[k]) if m.get("status") == "ok" and m.get(k) is not None else ""  # noqa: E731
        lines.append([r["case"], fmt_s(wl), fmt_s(nt), sp, g(wl, "first_s"), g(nt, "first_s"),
                      g(wl, "peak_rss_gb", "{:.2f}"), g(nt, "peak_rss_gb", "{:.2f}"), agree])
    w = [max(len(c), *(len(ln[i]) for ln in lines)) if lines else len(c) for i, c in enumerate(cols)]
    print(" | ".join(c.ljust(w[i]) for i, c in enumerate(cols)))
    print("-|-".join("-" * x for x in w))
    for ln in lines:
        print(" | ".join(v.ljust(w[i]) for i, v in enumerate(ln)))
    for r in rows:
        for lib in ("wl", "nt"):
            m = r[lib]
            if m.get("status") not in ("ok", None):
                print(f"  {r['case']} [{lib}]: {m.get('status')}: {m.get('reason', '')}")


def main() -> None:
    a = parse()
    cases = all_cases(a.quick)
    if a.list:
        for c in cases:
            print(f"{c.name:32s} {c.desc}")
        return
    cases = selected(cases, a.cases)
    if not cases:
        sys.exit(f"no case matches {a.cases}; see --list")
    tmp = tempfile.mkdtemp(prefix="widelimit-compare-")
    versions: dict = {}
    rows: list[dict] = []
    load_start = os.getloadavg()
    t_start = time.time()

    def save():
        if not a.json:
            return
        loads = [r["loadavg_1m"] for r in rows if r.get("loadavg_1m") is not None]
        m = meta(a, versions)
        m.update(loadavg_start=list(load_start), loadavg_end=list(os.getloadavg()),
                 loadavg_1m_mean=(sum(loads) / len(loads)) if loads else None,
                 wall_s=time.time() - t_start)
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump({"meta": m, "rows": rows}, f, indent=2)

    if a.quick:   # one process per library and round, all cases
        names = [c.name for c in cases]
        runs: dict[str, list] = {lib: [] for lib in LIBS}
        loads = []
        for rnd in range(a.rounds):
            order = LIBS if rnd % 2 == 0 else LIBS[::-1]
            for lib in order:
                print(f"[quick] round {rnd + 1}: {lib}", file=sys.stderr, flush=True)
                runs[lib].append(run_procs(lib, names, a, tmp))
                loads.append(os.getloadavg()[0])
        for c in cases:
            r = {"case": c.name, "desc": c.desc, "family": c.family, "work": c.work,
                 "loadavg_1m": statistics.mean(loads)}
            for lib in LIBS:
                r[SHORT[lib]] = merge_runs([x[c.name] for x in runs[lib]])
            rows.append(r)
    else:
        for c in cases:
            r = {"case": c.name, "desc": c.desc, "family": c.family, "work": c.work}
            loads = [os.getloadavg()[0]]
            per: dict[str, list] = {lib: [] for lib in LIBS}
            done: set = set()
            for rnd in range(a.rounds):
                order = LIBS if rnd % 2 == 0 else LIBS[::-1]
                for lib in order:
                    if lib in done:
                        continue
                    est = estimate(c, lib, rows)
                    cap = a.max_call_s if lib == "neural_tangents" else a.wl_max_call_s
                    if est is not None and est > cap:
                        per[lib] = [{"status": "not_run", "estimate_s": est,
                                     "reason": f"not run: would take ~{est:.3g} s per call "
                                               f"(scaled from smaller {c.family} cases; cap {cap:g} s)"}]
                        done.add(lib)
                        continue
                    print(f"  {c.name}: round {rnd + 1} {lib}" + (f" (est. {est:.3g} s/call)" if est else ""),
                          file=sys.stderr, flush=True)
                    res = run_procs(lib, [c.name], a, tmp)[c.name]
                    per[lib].append(res)
                    loads.append(os.getloadavg()[0])
                    if res.get("status") != "ok" or res["first_s"] > a.budget_s:
                        done.add(lib)      # skipped / failed / too slow for more rounds
            for lib in LIBS:
                runs_ = per[lib]
                r[SHORT[lib]] = runs_[0] if runs_ and runs_[0].get("status") == "not_run" else merge_runs(runs_)
            r["loadavg_1m"] = statistics.mean(loads)
            rows.append(r)
            summarize(r)
            _agree(r, a, tmp)
            for lib in LIBS:
                versions.update(r[SHORT[lib]].get("versions", {}) or {})
            save()
            print_table([r])
    if a.quick:
        for r in rows:
            summarize(r)
            _agree(r, a, tmp)
            for lib in LIBS:
                versions.update(r[SHORT[lib]].get("versions", {}) or {})
    save()
    print()
    print_table(rows)
    la = os.getloadavg()
    print(f"\nload average start {load_start[0]:.2f} / end {la[0]:.2f} (1 min), {os.cpu_count()} CPUs; "
          f"versions: {json.dumps(versions)}")
    if a.json:
        print(f"wrote {a.json}")


def _agree(r: dict, a, tmp: str) -> None:
    """Compare the two results; in float32, when they disagree, recompute both in float64
    (one untimed call each) to tell which one is off: the speed-up counts only if
    widelimit's float32 result is within tolerance of the float64 answer and the two
    float64 answers agree to 1e-6."""
    wl, nt = r["wl"], r["nt"]
    if "agreement" in r or wl.get("status") != "ok" or nt.get("status") != "ok":
        return
    ag = r["agreement"] = agreement(wl["npz"], nt["npz"], TOL[a.dtype])
    if ag["ok"]:
        return
    if a.dtype == "float32":
        print(f"  {r['case']}: float32 results differ by {ag['max_rel_err']:.2g}; "
              "recomputing both in float64", file=sys.stderr, flush=True)
        ref = {lib: run_procs(lib, [r["case"]], a, tmp, dtype="float64", repeats=0)[r["case"]]
               for lib in LIBS}
        if all(ref[lib].get("status") == "ok" for lib in LIBS):
            f64 = agreement(ref["widelimit"]["npz"], ref["neural_tangents"]["npz"], TOL["float64"])
            ag["float64_agree"] = f64["max_rel_err"]
            ag["wl_vs_float64"] = agreement(wl["npz"], ref["neural_tangents"]["npz"], 1e-3)["max_rel_err"]
            ag["nt_vs_float64"] = agreement(nt["npz"], ref["neural_tangents"]["npz"], 1e-3)["max_rel_err"]
            ag["wl_correct"] = bool(f64["ok"] and ag["wl_vs_float64"] <= TOL["float32"])
        else:
            ag["float64_check"] = {lib: ref[lib].get("reason") for lib in LIBS}
    if not ag.get("wl_correct"):
        r.pop("speedup", None)
        r["speedup_not_counted"] = nt["median_s"] / wl["median_s"]


if __name__ == "__main__":
    main()
