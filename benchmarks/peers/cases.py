"""Benchmark cases shared by widelimit and neural-tangents (imported by both environments).

Only the standard library and NumPy are imported here: ``benchmarks/peers/wl_cases.py``
(project environment, torch) and ``benchmarks/peers/nt_cases.py`` (``.venv-peers``, JAX)
build the same network from :func:`build` with their own ``stax``-like namespace, and the
same inputs from :func:`inputs` (NumPy, seeded), so both libraries compute the same thing.

Images are generated in PyTorch layout (N, C, H, W) and transposed to NHWC for
neural-tangents; sequences are (N, C, T) for widelimit and (N, T, C) for neural-tangents.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

W_STD, B_STD = 1.5, 0.05


@dataclass
class Case:
    name: str           # unique id, used by --cases
    kind: str           # "kernel" | "gram" | "entk" | "predict"
    arch: str           # key of ARCHS (or "" for gram)
    n: int              # examples (train examples for predict)
    shape: tuple        # per-example input shape in PyTorch layout
    desc: str           # one line for the table / docs
    family: str = ""    # cases whose cost scales with `work` within a family share anchors
    work: float = 1.0   # relative cost (for "not run (would take ~X s)" estimates)
    n_test: int = 0     # predict: test examples
    wl_impl: str = ""   # entk: widelimit implementation
    trace: bool = True  # entk: trace the output axis
    published_nt_s: float | None = None   # shared/PEER-BASELINE.md, for estimates before an anchor ran
    params: dict = field(default_factory=dict)


# ---- architectures, written once against a stax-like namespace ---------------------------

def _fc(S, depth, width=512):
    layers = []
    for _ in range(depth):
        layers += [S.Dense(width, W_std=W_STD, b_std=B_STD), S.Relu()]
    return S.serial(*layers, S.Dense(1, W_std=W_STD, b_std=B_STD))


def _cnn(S, readout, chan=64):
    layers = []
    for _ in range(3):
        layers += [S.Conv(chan, (3, 3), padding="SAME", W_std=W_STD, b_std=B_STD), S.Relu()]
    head = S.GlobalAvgPool() if readout == "gap" else S.Flatten()
    return S.serial(*layers, head, S.Dense(1, W_std=W_STD, b_std=B_STD))


def _attn(S, chan=64, heads=4):
    return S.serial(
        S.GlobalSelfAttention(n_chan_out=chan, n_chan_key=chan, n_chan_val=chan, n_heads=heads,
                              linear_scaling=True, W_key_std=1.0, W_value_std=1.0,
                              W_query_std=1.0, W_out_std=1.0, b_std=None),
        S.Relu(), S.GlobalAvgPool(), S.Dense(1, W_std=W_STD, b_std=B_STD))


def build(S, arch: str):
    """The network `arch` built with the stax-like namespace `S`."""
    if arch.startswith("fc"):
        return _fc(S, int(arch[2:]))
    if arch == "cnn_gap":
        return _cnn(S, "gap")
    if arch == "cnn_flatten":
        return _cnn(S, "flatten")
    if arch == "attn":
        return _attn(S)
    raise KeyError(arch)


# ---- inputs ---------------------------------------------------------------------------------

def inputs(case: Case, dtype: str):
    """Seeded NumPy inputs in PyTorch layout: x (N, *shape), plus x_test, y_train for predict."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((case.n, *case.shape)).astype(dtype)
    out = {"x": x}
    if case.kind == "predict":
        out["x_test"] = rng.standard_normal((case.n_test, *case.shape)).astype(dtype)
        out["y_train"] = rng.standard_normal((case.n, 1)).astype(dtype)
    return out


def mlp_params(sizes=(784, 512, 512, 10), dtype="float32"):
    """Weights of the empirical-NTK MLP, (out, in) as torch.nn.Linear stores them."""
    rng = np.random.default_rng(1)
    params = []
    for din, dout in zip(sizes[:-1], sizes[1:]):
        w = (rng.standard_normal((dout, din)) / np.sqrt(din)).astype(dtype)
        b = (0.1 * rng.standard_normal(dout)).astype(dtype)
        params.append((w, b))
    return params


def to_nt_layout(x: np.ndarray) -> np.ndarray:
    """PyTorch layout (N, C, ...) -> channels last (N, ..., C)."""
    return x if x.ndim == 2 else np.moveaxis(x, 1, -1)


PREDICT_DIAG_REG = 1e-2   # relative to the mean diagonal, as neural-tangents scales it


# ---- the case list --------------------------------------------------------------------------

def all_cases(quick: bool = False) -> list[Case]:
    c: list[Case] = []
    if quick:
        fc_sizes, fc20_sizes = [200, 400], [200]
        cnn = [(8, 8), (8, 16)]          # (H=W, N)
        cnn32: list = []
        flat = [(8, 16)]
        attn = [(8, 8, 16)]              # (N, tokens, dims)
        entk_n, pred = 20, (200, 50)
    else:
        fc_sizes, fc20_sizes = [1000, 2000, 4000], [1000, 2000, 4000]
        cnn = [(16, 16), (16, 32), (16, 64), (16, 128)]
        cnn32 = [(32, 32), (32, 64)]
        flat = [(16, 64), (32, 64)]
        attn = [(32, 16, 64)]
        entk_n, pred = 200, (2000, 500)
    pub = {("fc3", 1000): 0.024, ("fc3", 2000): 0.133, ("fc3", 4000): 0.528, ("fc20", 2000): 2.03}
    n_gram = fc_sizes[-1]
    c.append(Case(f"gram_N{n_gram}", "gram", "", n_gram, (784,),
                  f"reference: Gram matrix x @ x.T, x ({n_gram}, 784)", family="gram"))
    for depth, sizes in ((3, fc_sizes), (20, fc20_sizes)):
        for n in sizes:
            c.append(Case(f"fc{depth}_N{n}", "kernel", f"fc{depth}", n, (784,),
                          f"FC ReLU depth {depth}, NNGP+NTK, x ({n}, 784)", family=f"fc{depth}",
                          work=float(n) ** 2, published_nt_s=pub.get((f"fc{depth}", n))))
    pub_cnn = {16: 3.96, 32: 16.1, 64: 70.9}
    for hw, n in cnn + cnn32:
        c.append(Case(f"cnn_gap_{hw}x{hw}_N{n}", "kernel", "cnn_gap", n, (3, hw, hw),
                      f"CNN 3x[conv3x3(64)+relu]+GAP, NNGP+NTK, {hw}x{hw}x3, N={n}",
                      family="cnn_gap", work=float(n) ** 2 * hw ** 4,
                      published_nt_s=pub_cnn.get(n) if hw == 16 else None))
    for hw, n in flat:
        c.append(Case(f"cnn_flatten_{hw}x{hw}_N{n}", "kernel", "cnn_flatten", n, (3, hw, hw),
                      f"CNN 3x[conv3x3(64)+relu]+Flatten, NNGP+NTK, {hw}x{hw}x3, N={n}",
                      family="cnn_flatten", work=float(n) ** 2 * hw ** 2))
    for n, t, d in attn:
        c.append(Case(f"attn_N{n}_T{t}_C{d}", "kernel", "attn", n, (d, t),
                      f"GlobalSelfAttention(64, 4 heads)+relu+GAP, NNGP+NTK, N={n}, {t} tokens, {d} dims",
                      family="attn", work=float(n) ** 2 * t ** 4))
    pub_entk = {True: 0.016, False: 0.047}
    for trace in (True, False):
        for impl in ("auto", "structured"):
            tag = "traced" if trace else "untraced"
            c.append(Case(f"entk_{tag}_{impl}_N{entk_n}", "entk", "mlp", entk_n, (784,),
                          f"empirical NTK, MLP 784-512-512-10, N={entk_n}, {tag}; "
                          f"widelimit {impl} vs NT structured derivatives",
                          family="entk", wl_impl=impl, trace=trace,
                          published_nt_s=pub_entk[trace] if not quick else None))
    ntr, nte = pred
    c.append(Case(f"predict_{ntr}_{nte}", "predict", "fc3", ntr, (784,),
                  f"gradient_descent_mse_ensemble, t=inf, FC depth 3, {ntr} train / {nte} test, "
                  f"NNGP+NTK mean and covariance", n_test=nte, family="predict",
                  published_nt_s=0.33 if not quick else None))
    return c
