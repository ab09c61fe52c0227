"""A library never changes its host process behind the user's back (issue 16).

In a fresh interpreter: importing widelimit and computing FC and CNN kernels, a
prediction, an empirical NTK and a Monte Carlo kernel leave os.environ, torch's thread
count, default dtype and matmul precision, the warning filters, the global torch and
NumPy RNG states and glibc's malloc settings (no ``mallopt`` call: ctypes is wrapped
before the import) as they were.  Opting in (``wl.config.tune_runtime`` /
``WIDELIMIT_TUNE_RUNTIME=1``) does call ``mallopt`` and set ``OPENBLAS_THREAD_TIMEOUT``,
which shows the probe can see them.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import ctypes, json, os, sys, warnings
calls = []
_CDLL = ctypes.CDLL
class _Lib:                                     # records mallopt calls, passes the rest on
    def __init__(self, *a, **k):
        self._lib = _CDLL(*a, **k)
    def __getattr__(self, name):
        fn = getattr(self._lib, name)
        if name != "mallopt":
            return fn
        def mallopt(*args):
            calls.append(args)
            return fn(*args)
        return mallopt
ctypes.CDLL = _Lib
import numpy as np
import torch
# torch's own lazily imported compiler stack (torch.func, torch.compile) sets
# TORCHINDUCTOR_CACHE_DIR and, through sympy, a warning filter when first imported, in any
# program that uses them: imported before the snapshot, so only widelimit's effects count
import torch._dynamo  # noqa: F401
torch.set_num_threads(2)
np.random.seed(5); torch.manual_seed(5)

def snapshot():
    return dict(env=dict(os.environ), threads=torch.get_num_threads(),
                dtype=str(torch.get_default_dtype()),
                matmul=torch.get_float32_matmul_precision(),
                filters=repr(warnings.filters),
                torch_rng=torch.random.get_rng_state().tolist(),
                np_rng=repr(np.random.get_state()[1][:8].tolist() + [np.random.get_state()[2]]))

before = snapshot()
import widelimit as wl
from widelimit import layers as L
if sys.argv[1] == "opt-in":
    wl.config.tune_runtime()
x = torch.randn(300, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
before["torch_rng"] = torch.random.get_rng_state().tolist()   # (randn above used a generator)
fc = L.serial(L.Dense(64, W_std=1.5, b_std=0.1), L.Relu(), L.Dense(1))
fc.kernel_fn(x, get=("nngp", "ntk")); fc.kernel_fn(x[:50], x[50:80], get="ntk")
img = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(1))
cnn = L.serial(L.Conv(16, (3, 3), padding="SAME"), L.Relu(), L.GlobalAvgPool(), L.Dense(1))
cnn.kernel_fn(img, get="ntk"); cnn.kernel_fn(img[:4], img[4:9], get="nngp", diagonal_spatial=False)
y = torch.randn(300, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
predict = wl.predict.gradient_descent_mse_ensemble(fc, x[:250], y[:250], diag_reg=1e-4)
predict(x_test=x[250:], get="ntk", compute_cov=True)
model = fc.module((20,), dtype=torch.float64, seed=3)
wl.empirical_ntk(model, x[:30], x[30:40])
wl.monte_carlo_kernel_fn(fc, 2, width=32, seed=0)(x[:5], x[5:8], get="ntk")
after = snapshot()
diff = {k: (str(before[k])[:300], str(after[k])[:300]) for k in before if before[k] != after[k]}
if "env" in diff:
    diff["env"] = {k: (before["env"].get(k), after["env"].get(k))
                   for k in set(before["env"]) | set(after["env"])
                   if before["env"].get(k) != after["env"].get(k)}
print(json.dumps({"diff": diff, "mallopt": calls,
                  "applied": __import__("widelimit.scale.memory").scale.memory._tuned["applied"]}))
'''


def _run(mode: str, **env_changes) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WIDELIMIT_TUNE_RUNTIME", "OPENBLAS_THREAD_TIMEOUT", "WIDELIMIT_TUNE_MALLOC",
                        "GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_changes)
    p = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_import_and_compute_leave_the_process_alone():
    out = _run("default")
    assert out["diff"] == {}, out["diff"]
    assert out["mallopt"] == [] and out["applied"] is False


@pytest.mark.parametrize("how", ["call", "env"])
def test_opting_in_tunes_malloc_and_openblas(how):
    out = _run("opt-in") if how == "call" else _run("default", WIDELIMIT_TUNE_RUNTIME="1")
    assert [args[0] for args in out["mallopt"]] == [-3, -1]       # M_MMAP_, M_TRIM_THRESHOLD
    assert out["applied"] is True
    env = out["diff"].pop("env", {})
    assert env.get("OPENBLAS_THREAD_TIMEOUT") == [None, "4"]
    assert out["diff"] == {}, out["diff"]


def test_tune_runtime_api(monkeypatch):
    import widelimit as wl
    from widelimit import config
    from widelimit.scale import memory
    monkeypatch.setitem(config._state, "tuning", config.RuntimeTuning())
    monkeypatch.setitem(memory._tuned, "done", False)
    assert wl.config.runtime_tuning() == config.RuntimeTuning(False, None, False)
    assert memory.tune_malloc() is False and memory._tuned["done"] is False   # not opted in
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "9")                        # the user's choice
    t = wl.config.tune_runtime(malloc=False, openblas_thread_timeout=4)
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "9" and not t.openblas_effective
    assert t.malloc is False and memory.tune_malloc() is False
    with pytest.raises(ValueError, match="openblas_thread_timeout"):
        wl.config.tune_runtime(openblas_thread_timeout=0)
    with pytest.raises(TypeError, match="malloc"):
        wl.config.tune_runtime(malloc="yes")


def test_single_thread_restores_the_thread_count():
    import torch
    from widelimit.scale.threads import single_thread
    n = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with single_thread(True):
            assert torch.get_num_threads() == 1
            raise RuntimeError
    assert torch.get_num_threads() == n


def test_coord_check_and_module_seed_restore_the_global_rng():
    import torch
    from torch import nn

    import widelimit as wl
    from widelimit import layers as L
    state = torch.random.get_rng_state()
    L.serial(L.Dense(4), L.Relu(), L.Dense(1)).module((3,), seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    x, y = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(8, 1)
    wl.coord_check(lambda w: nn.Sequential(nn.Linear(3, w), nn.ReLU(), nn.Linear(w, 1)),
                   [8, 16], (x, y), steps=1, seeds=1)
    assert torch.equal(torch.random.get_rng_state(), state)


def _global_state():
    import warnings

    import numpy as np
    import torch
    return dict(torch_rng=torch.random.get_rng_state(), np_rng=repr(np.random.get_state()[1][:8]),
                threads=torch.get_num_threads(), dtype=torch.get_default_dtype(),
                grad=torch.is_grad_enabled(), matmul=torch.get_float32_matmul_precision(),
                filters=repr(warnings.filters), env=dict(os.environ))


def _public_calls():
    """One call of each public entry point (and of the same ones failing on bad input)."""
    import numpy as np
    import torch
    from torch import nn

    import widelimit as wl
    from widelimit import layers as L
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, dtype=torch.float64, generator=g)
    y = torch.randn(6, 1, dtype=torch.float64, generator=g)
    net = L.serial(L.Dense(8), L.Erf(), L.Dense(1))
    k = net.kernel_fn(x, get="ntk")
    mk = lambda w: nn.Sequential(nn.Linear(3, w), nn.ReLU(), nn.Linear(w, 1))   # noqa: E731
    model = wl.parametrize(mk(16), base=mk(4), scheme="mup")
    return [
        lambda: net.kernel_fn(x.numpy(), get=("nngp", "ntk")),
        lambda: L.serial(L.Dense(8), L.Elementwise(torch.tanh), L.Dense(1)).kernel_fn(x, get="ntk"),
        lambda: net.module((3,), seed=1)(x.float()),
        lambda: wl.empirical_ntk(net.module((3,), seed=2, dtype=torch.float64), x),
        lambda: wl.monte_carlo_kernel_fn(net, 2, width=16, seed=0)(x, get="nngp"),
        lambda: wl.predict.gradient_descent_mse(k, y, diag_reg=1e-3)(np.array([1.0, 10.0]), 0.0),
        lambda: wl.predict.gp_inference(k, y, diag_reg=1e-3)("ntk", k[:2], k[:2, :2]),
        lambda: wl.predict.max_learning_rate(k),
        lambda: wl.param_groups(model, 1e-2),
        lambda: wl.optim.Adam(model, lr=1e-3),
        lambda: wl.coord_check(mk, [8, 16], (x.float(), y.float()), steps=1),
        # failing calls must not leave anything changed either
        lambda: net.kernel_fn(x * 1e300, get="nngp"),
        lambda: wl.coord_check(mk, [8, 16], (torch.randn(4, 5, generator=g), torch.zeros(4, 1)), steps=1),
        lambda: wl.predict.gradient_descent_mse(-k, y),
        lambda: L.Erf(a=float("nan")),
    ]


def test_public_functions_leave_global_state_alone():
    import torch

    calls = _public_calls()               # (builds torch modules: uses the global RNG itself)
    before = _global_state()
    for i, call in enumerate(calls):
        try:
            call()
        except (ValueError, TypeError):
            pass
        after = _global_state()
        for key in before:
            same = torch.equal(before[key], after[key]) if key == "torch_rng" else before[key] == after[key]
            assert same, f"{key} changed by call {i} of _public_calls"
