"""neural-tangents side of benchmarks/compare.py; runs in .venv-peers (see benchmarks/peers/setup).

Kernels are jit-compiled (``jax.jit(kernel_fn, static_argnames="get")``); the first call
(tracing + XLA compile) is reported apart from the warm calls.  Images go in as NHWC and
sequences as (N, T, C), neural-tangents' default layouts.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if "--dtype" in sys.argv and sys.argv[sys.argv.index("--dtype") + 1] == "float64":
    os.environ["JAX_ENABLE_X64"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

import _runner  # noqa: E402
from cases import PREDICT_DIAG_REG, build, inputs, mlp_params, to_nt_layout  # noqa: E402


def setup(args) -> dict:
    import jaxlib
    import scipy
    return {"neural_tangents": nt.__version__ if hasattr(nt, "__version__") else "0.6.5",
            "jax": jax.__version__, "jaxlib": jaxlib.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "jax_backend": jax.default_backend()}


def flatten(obj) -> dict:
    return _runner.flatten(obj, (jax.Array, np.ndarray))


def prepare(case, dtype):
    data = {k: jnp.asarray(to_nt_layout(v) if k != "y_train" else v)
            for k, v in inputs(case, dtype).items()}
    x = data["x"]
    if case.kind == "gram":
        gram = jax.jit(lambda a: a @ a.T)
        return lambda: {"gram": gram(x)}
    if case.kind == "kernel":
        _, _, kernel_fn = build(stax, case.arch)
        kf = jax.jit(kernel_fn, static_argnames="get")

        def run():
            k = kf(x, None, get=("nngp", "ntk"))
            return {"nngp": k[0], "ntk": k[1]}
        return run
    if case.kind == "entk":
        params = [(jnp.asarray(w.T), jnp.asarray(b)) for w, b in mlp_params(dtype=dtype)]

        def f(p, a):
            for i, (w, b) in enumerate(p):
                a = a @ w + b
                if i < len(p) - 1:
                    a = jax.nn.relu(a)
            return a
        trace = (-1,) if case.trace else ()
        kfn = jax.jit(nt.empirical_ntk_fn(f, trace_axes=trace, vmap_axes=0,
                                          implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES))
        return lambda: {"ntk": kfn(x, None, params)}
    if case.kind == "predict":
        _, _, kernel_fn = build(stax, case.arch)
        kf = jax.jit(kernel_fn, static_argnames="get")

        def run():
            fn = nt.predict.gradient_descent_mse_ensemble(kf, x, data["y_train"],
                                                          diag_reg=PREDICT_DIAG_REG)
            return flatten(fn(t=None, x_test=data["x_test"], get=("nngp", "ntk"), compute_cov=True))
        return run
    raise KeyError(case.kind)


def sync(out):
    return jax.block_until_ready(out)


if __name__ == "__main__":
    _runner.main("neural_tangents", prepare, sync=sync, to_numpy=np.asarray, setup=setup)
