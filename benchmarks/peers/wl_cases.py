"""widelimit side of benchmarks/compare.py (project environment). See _runner.py."""
from __future__ import annotations

import os
# opt in to widelimit's process-wide tuning (glibc malloc, OPENBLAS_THREAD_TIMEOUT) in this
# process and its subprocesses, so numbers stay comparable across runs; WIDELIMIT_TUNE_RUNTIME=0
# measures without (docs/benchmarks.md#runtime-tuning)
os.environ.setdefault("WIDELIMIT_TUNE_RUNTIME", "1")
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import _runner  # noqa: E402
from cases import PREDICT_DIAG_REG, build, inputs, mlp_params  # noqa: E402

import widelimit as wl  # noqa: E402
from widelimit import layers as L  # noqa: E402

NEEDS = {"cnn_gap": ("Conv", "GlobalAvgPool"), "cnn_flatten": ("Conv", "Flatten"),
         "attn": ("GlobalSelfAttention", "GlobalAvgPool")}


def setup(args) -> dict:
    torch.set_num_threads(args.threads)
    try:
        from widelimit.kernels import _compile
        mode = _compile.get_compile()
    except ImportError:
        mode = "n/a"
    return {"widelimit": getattr(wl, "__version__", "?"), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "compile_mode": mode}


def flatten(obj) -> dict:
    return _runner.flatten(obj, (torch.Tensor, np.ndarray))


def _check(arch):
    missing = [n for n in NEEDS.get(arch, ()) if not hasattr(L, n)]
    if missing:
        raise NotImplementedError(f"not available: widelimit.layers has no {', '.join(missing)} "
                                  "(not merged on main yet)")


def prepare(case, dtype):
    dt = getattr(torch, dtype)
    data = {k: torch.from_numpy(v) for k, v in inputs(case, dtype).items()}
    x = data["x"]
    if case.kind == "gram":
        return lambda: {"gram": x @ x.T}
    if case.kind == "kernel":
        _check(case.arch)
        net = build(L, case.arch)

        def run():
            nngp, ntk = net.kernel_fn(x, get=("nngp", "ntk"))
            return {"nngp": nngp.reshape(x.shape[0], x.shape[0]),
                    "ntk": ntk.reshape(x.shape[0], x.shape[0])}
        return run
    if case.kind == "entk":
        mods = []
        for i, (w, b) in enumerate(mlp_params(dtype=dtype)):
            lin = torch.nn.Linear(w.shape[1], w.shape[0], dtype=dt)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            mods += [lin, torch.nn.ReLU()]
        model = torch.nn.Sequential(*mods[:-1])
        trace = (-1,) if case.trace else ()
        return lambda: {"ntk": wl.empirical_ntk(model, x, None, trace_axes=trace,
                                                implementation=case.wl_impl)}
    if case.kind == "predict":
        try:
            from widelimit import predict
            ens = predict.gradient_descent_mse_ensemble
        except (ImportError, AttributeError):
            raise NotImplementedError("not available: widelimit.predict.gradient_descent_mse_ensemble "
                                      "(not merged on main yet)") from None
        net = build(L, case.arch)

        def run():
            fn = ens(net.kernel_fn, x, data["y_train"], diag_reg=PREDICT_DIAG_REG)
            return flatten(fn(t=None, x_test=data["x_test"], get=("nngp", "ntk"), compute_cov=True))
        return run
    raise KeyError(case.kind)


def to_numpy(v):
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


if __name__ == "__main__":
    _runner.main("widelimit", prepare, sync=lambda out: out, to_numpy=to_numpy, setup=setup)
