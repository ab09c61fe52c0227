"""One-pass CPU loops (numba) for the rectifier duals and the NTK update around them.

Eagerly, a ReLU layer of an analytic kernel is about twenty elementwise passes over the
(N1, N2) matrices plus one ``atan2``, which ATen evaluates one entry at a time (about
3 ns per entry on AVX2, 13 times a multiply).  Here the affine layer before the
nonlinearity, the arc-cosine dual (Cho & Saul, 2009), its derivative and the NTK product

    c     = alpha nngp + beta                 (the Dense / identity before the dual)
    ntk_c = gamma nngp + delta ntk + eps
    delta_ = sqrt(v1 v2 - c^2),  theta = atan2(delta_, c)
    T     = f (delta_ + (pi - theta) c) + ab c
    ntk'  = ntk_c (f (pi - theta) + ab)

are one loop that LLVM vectorises: ``theta`` comes from a branch-free reduction of
``atan`` to [0, tan(pi/8)] and Cephes' polynomial (float32, 2.8e-7 absolute) or to
[-0.2, 0.66] and Cephes' rational function (float64, 1 ulp); the radicand is shrunk
by 4 ulp exactly as in :func:`widelimit.kernels.rules._math.angle`.

The loops release the GIL, so image blocks and kernel tiles on the thread pool of
:func:`widelimit.scale.threads.parallel_map` run in parallel; a large call outside it
splits its rows over torch's thread count.

Used for CPU float32 / float64 tensors that need no gradient, when numba is installed
(``pip install widelimit[fast]``) and ``WIDELIMIT_NATIVE`` is not ``off``; otherwise
the rules stay in torch.  Compiled loops are cached on disk by numba.
"""
from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import torch
from torch import Tensor

_MODES = ("auto", "off")
_state = {"mode": os.environ.get("WIDELIMIT_NATIVE", "auto").lower(), "kernels": None,
          "pool": None, "threads": 0}

#: split a call over torch's threads from this many entries (below, one thread is faster)
PARALLEL_FROM = 1 << 16
#: the flat loop takes rows of at least this many entries (whole trailing axes)
ROW = 1024


def set_native(mode: str) -> None:
    """``"auto"``: use the numba loops where they apply; ``"off"``: always torch."""
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}, got {mode!r}.")
    _state["mode"] = mode


def get_native() -> str:
    return _state["mode"]


def _kernels():
    """The compiled loops (imported on first use: numba costs 0.2 s to import)."""
    if _state["kernels"] is None:
        try:
            from widelimit.kernels import _native_loops
        except ImportError:
            _state["kernels"] = False
        else:
            _state["kernels"] = _native_loops
    return _state["kernels"]


def available() -> bool:
    """Whether numba is installed and the native loops are switched on."""
    return _state["mode"] != "off" and bool(_kernels())


def applies(*tensors: Optional[Tensor]) -> bool:
    """Whether the native loops can take these tensors (CPU, float32/64, no gradient)."""
    ts = [t for t in tensors if t is not None]
    if not available() or torch.compiler.is_compiling():
        return False
    dtype = ts[0].dtype
    if dtype not in (torch.float32, torch.float64):
        return False
    grad = torch.is_grad_enabled()
    return all(t.device.type == "cpu" and t.dtype == dtype and not (grad and t.requires_grad)
               for t in ts)


def _pool(workers: int) -> ThreadPoolExecutor:
    if _state["pool"] is None or _state["threads"] != workers:
        _state["pool"] = ThreadPoolExecutor(workers, thread_name_prefix="widelimit-native")
        _state["threads"] = workers
    return _state["pool"]


def _chunks(rows: int, size: int, triangle: str = "") -> list[tuple[int, int]]:
    """Row ranges of equal work, one per thread.  ``triangle="upper"``: row i has
    ``rows - i`` entries, so the boundaries are at ``rows (1 - sqrt(1 - t / parts))``;
    ``"lower"``: row i has i entries, boundaries at ``rows sqrt(t / parts)``."""
    threads = torch.get_num_threads()
    parts = 1 if size < PARALLEL_FROM or threads < 2 else min(threads, rows)
    if triangle == "upper":
        cuts = [round(rows * (1 - math.sqrt(1 - t / parts))) for t in range(parts + 1)]
    elif triangle == "lower":
        cuts = [round(rows * math.sqrt(t / parts)) for t in range(parts + 1)]
    else:
        cuts = [round(rows * t / parts) for t in range(parts + 1)]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _run(fn, rows: int, size: int, *args, triangle: str = "") -> None:
    spans = _chunks(rows, size, triangle)
    if len(spans) == 1:
        fn(*args, 0, rows)
        return
    list(_pool(len(spans)).map(lambda s: fn(*args, s[0], s[1]), spans))


def _np(t: Tensor):
    return t.detach().contiguous().numpy()


def _params(abrelu: Optional[tuple[float, float]], affine: Sequence[float],
            dtype: torch.dtype) -> list[float]:
    """The parameter row of the loops: ``(f, ab, shrink, alpha, beta, gamma, delta, eps, pi,
    relu?)`` for ``ABRelu(*abrelu)`` (or no nonlinearity) after ``affine``."""
    a, b = (0.0, 0.0) if abrelu is None else abrelu
    return [(b - a) ** 2 / (2 * math.pi), a * b, 1.0 - 4 * torch.finfo(dtype).eps, *affine,
            math.pi, 0.0 if abrelu is None else 1.0]


@functools.lru_cache(maxsize=256)
def _param_row(abrelu: Optional[tuple[float, float]], affine: tuple, dtype: torch.dtype):
    """:func:`_params` as a NumPy row of ``dtype``, made once per layer (read only by the loops)."""
    return torch.tensor(_params(abrelu, affine, dtype), dtype=dtype).numpy()


def mirror_upper(a: Tensor) -> Tensor:
    """A new (N, N) tensor: ``a`` on and above the diagonal, ``a.T`` below it."""
    out = torch.empty(a.shape, dtype=a.dtype)
    _run(_kernels().mirror_upper, a.shape[0], a.numel(), _np(a), out.numpy(), False)
    return out


def abrelu_pass(ab_params: tuple[float, float], nngp: Tensor, ntk: Optional[Tensor],
                v1: Tensor, v2: Tensor, affine: Sequence[float] = (1.0, 0.0, 0.0, 1.0, 0.0),
                upper: bool = False) -> tuple[Tensor, Optional[Tensor]]:
    """``(T, ntk')`` of ``ABRelu(a, b)`` after the affine map ``affine = (alpha, beta,
    gamma, delta, eps)`` (module docstring); ``v1``, ``v2`` broadcast against ``nngp``
    and are the variances *after* the affine map.  New tensors; the inputs are unchanged.
    ``upper`` (an (N, N) kernel with ``Kernel.upper``): entries below the diagonal are 0."""
    loops = _kernels()
    affine, ntk_scalar = _fold_scalar_ntk(affine, ntk)
    dtype = nngp.dtype
    params = _param_row(ab_params, tuple(affine), dtype)
    has_ntk = ntk is not None
    # elementwise in nngp's own memory order (a permuted einsum result is not copied; an
    # upper-triangle kernel keeps its own order, in which "upper" is defined)
    order = list(range(nngp.ndim)) if upper else _memory_order(nngp)
    x = nngp.detach().permute(order).contiguous()
    out = torch.empty(x.shape, dtype=dtype)
    out_ntk = None if ntk is None else torch.empty(x.shape, dtype=dtype)
    k = x if ntk is None or ntk_scalar else torch.broadcast_to(ntk.detach(), nngp.shape).permute(order)
    back = _inverse(order)
    split = _outer_split(v1.permute(order).shape,
                         v2.permute(order).shape) if v1.ndim == nngp.ndim == v2.ndim else None
    if split is not None:
        # memory order (x1's axes..., x2's axes...): v1 v2 is an outer product (vector
        # inputs: rows i and columns j, variances v1[i] and v2[j])
        m1 = math.prod(x.shape[:split])
        two = (lambda t: t.contiguous().numpy().reshape(m1, -1))
        _run(loops.abrelu_rows, m1, x.numel(), two(x), two(k), _np(v1.permute(order)).reshape(-1),
             _np(v2.permute(order)).reshape(-1), two(out), two(out if out_ntk is None else out_ntk),
             params, has_ntk, upper, triangle="upper" if upper else "")
        return out.permute(back), None if out_ntk is None else out_ntk.permute(back)
    # otherwise: v1 v2 spelled out, in rows of at least ROW entries (short rows do not vectorise)
    p = torch.broadcast_to(v1 * v2, nngp.shape).permute(order)
    cols = 1
    for n in reversed(x.shape):
        if cols >= ROW:
            break
        cols *= n
    flat = (lambda t: t.contiguous().numpy().reshape(-1, cols))
    _run(loops.abrelu_flat, x.numel() // cols, x.numel(), flat(x), flat(k), flat(p), flat(out),
         flat(out if out_ntk is None else out_ntk), params, has_ntk)
    return out.permute(back), None if out_ntk is None else out_ntk.permute(back)


def _fold_scalar_ntk(affine: Sequence[float], ntk: Optional[Tensor]) -> tuple[tuple, bool]:
    """A 0-d ``ntk`` (e.g. the zero NTK of the raw inputs) folded into the affine map's
    constant ``eps``; and whether it was."""
    if ntk is None or ntk.ndim:
        return tuple(affine), False
    alpha, beta, gamma, delta, eps = affine
    return (alpha, beta, gamma, 0.0, eps + delta * float(ntk)), True


def abrelu_pool(ab_params: tuple[float, float], nngp: Tensor, ntk: Optional[Tensor],
                v1: Tensor, v2: Tensor, symmetric: bool = False,
                affine: Sequence[float] = (1.0, 0.0, 0.0, 1.0, 0.0)) -> tuple[Tensor, Optional[Tensor]]:
    """``ABRelu(a, b)`` of a full-spatial kernel, then the sum over all position pairs:
    ``(sum T, sum ntk')``, each (N1, N2), without forming the (N1, N2, S1, S1', ...)
    results (a nonlinearity followed by global pooling).

    ``nngp`` / ``ntk``: (N1, N2, S1, S1', ..., Sk, Sk') (interleaved spatial axes); ``v1``,
    ``v2``: the variances from :func:`widelimit.kernels.state.pair_variances`.  Works in
    ``nngp``'s memory order when its batch axes come first, or when it is (x1, its
    positions, x2, its positions) (a product of factors); otherwise it is copied.
    ``symmetric`` (x1 is x2, so each kernel is symmetric under swapping the inputs
    together with their positions): only pairs b >= a are computed."""
    loops = _kernels()
    affine, _ = _fold_scalar_ntk(affine, ntk)
    has_ntk = ntk is not None
    dtype = nngp.dtype
    n1, n2 = nngp.shape[:2]
    sp1, sp2 = list(range(2, nngp.ndim, 2)), list(range(3, nngp.ndim, 2))
    order = _memory_order(nngp)
    pos1, pos2 = order[1:1 + len(sp1)], order[2 + len(sp1):]
    interleaved = (order[0] == 0 and order[1 + len(sp1)] == 1 and sorted(pos1) == sp1
                   and sorted(pos2) == sp2 and len(sp1) > 0)
    if not interleaved and order[:2] != [0, 1]:
        order = list(range(nngp.ndim))
    x = nngp.detach().permute(order).contiguous()
    shape = x.shape
    if interleaved:
        p, q = math.prod(shape[1:1 + len(sp1)]), math.prod(shape[2 + len(sp1):])
        x = x.reshape(n1, p, n2, q)
        # v1: (N1, 1, S1, 1, ...) -> (N1, P, 1) in x1's position order; v2 likewise
        w1 = v1.reshape(n1, *(v1.shape[i] for i in sp1)).permute(0, *[sp1.index(i) + 1 for i in pos1])
        w2 = v2.reshape(n2, *(v2.shape[i] for i in sp2)).permute(0, *[sp2.index(i) + 1 for i in pos2])
        w1, w2 = w1.reshape(n1, p, 1), w2.reshape(n2, 1, q)
    else:
        cols = 1
        for n in reversed(shape[2:]):
            if cols >= 64:
                break
            cols *= n
        x = x.reshape(n1, n2, -1, cols)
        full1 = (n1, 1) + tuple(nngp.shape[2:])
        full2 = (1, n2) + tuple(nngp.shape[2:])
        w1 = torch.broadcast_to(v1, full1).permute(order).reshape(n1, -1, cols)
        w2 = torch.broadcast_to(v2, full2).permute(order).reshape(n2, -1, cols)
    k = x
    if has_ntk and ntk.ndim:
        k = ntk.detach().permute(order).contiguous().reshape(x.shape)
    params = _param_row(ab_params, tuple(affine), dtype)
    out = torch.empty((n1, n2), dtype=dtype)
    out_ntk = torch.empty((n1, n2), dtype=dtype)
    symmetric = symmetric and n1 == n2
    _run(loops.abrelu_pool, n1, x.numel(), x.numpy(), k.numpy(), _np(w1), _np(w2), params, has_ntk,
         interleaved, symmetric, out.numpy(), out_ntk.numpy(), triangle="upper" if symmetric else "")
    return out, out_ntk if has_ntk else None


def _outer_split(shape1: tuple, shape2: tuple) -> Optional[int]:
    """An axis m with ``shape1[m:]`` and ``shape2[:m]`` all 1 (the variance maps of x1 and of
    x2 live on disjoint leading / trailing axes), or None."""
    for m in range(1, len(shape1)):
        if all(n == 1 for n in shape1[m:]) and all(n == 1 for n in shape2[:m]):
            return m
    return None


def _memory_order(t: Tensor) -> list[int]:
    """Axes from the largest stride to the smallest: ``t.permute(order)`` is contiguous
    when ``t`` is a permutation of a contiguous tensor (e.g. an einsum result)."""
    if t.ndim == 0:
        return []
    return sorted(range(t.ndim), key=lambda i: (-t.stride(i), i))


def _inverse(order: list[int]) -> list[int]:
    back = [0] * len(order)
    for i, o in enumerate(order):
        back[o] = i
    return back


def chain_pass(nngp: Tensor, ntk: Optional[Tensor], layers: Sequence[tuple],
               upper: bool = False, overwrite: bool = False) -> tuple[Tensor, Optional[Tensor]]:
    """``(nngp, ntk)`` of an (N1, N2) vector kernel after a chain of layers, one row at a
    time in cache (one read and one write of the matrices for the whole chain).

    ``layers``: one ``(affine, abrelu, v1, v2)`` per layer: the affine map ``(alpha, beta,
    gamma, delta, eps)`` (as in :func:`abrelu_pass`), then ``abrelu = (a, b)`` or None, with
    the variances ``v1`` (N1,), ``v2`` (N2,) after the affine map (None without ABRelu).
    ``upper`` (``Kernel.upper``): only entries on and above the diagonal are computed from
    ``nngp`` / ``ntk``, the rest is mirrored: the results are complete.  ``overwrite``: the
    new nngp goes into ``nngp``'s own buffer (each row is read before it is written)."""
    loops = _kernels()
    dtype = nngp.dtype
    n1, n2 = nngp.shape
    prm = torch.tensor([_params(abrelu, affine, dtype) for affine, abrelu, _, _ in layers],
                       dtype=torch.float64)
    v1s = torch.zeros((len(layers), n1), dtype=dtype)
    v2s = torch.zeros((len(layers), n2), dtype=dtype)
    for i, (_, abrelu, v1, v2) in enumerate(layers):
        if abrelu is not None:
            v1s[i], v2s[i] = v1.reshape(-1), v2.reshape(-1)
    x = _np(nngp)
    out = nngp if overwrite and nngp.is_contiguous() else torch.empty((n1, n2), dtype=dtype)
    out_ntk = torch.empty((n1, n2), dtype=dtype)        # written even without an NTK
    k0 = float(ntk) if ntk is not None and ntk.ndim == 0 else math.nan
    k = x if ntk is None or ntk.ndim == 0 else _np(torch.broadcast_to(ntk, nngp.shape))
    _run(loops.chain_rows, n1, out.numel(), x, k, k0, _np(v1s), _np(v2s), prm.to(dtype).numpy(),
         out.numpy(), out_ntk.numpy(), ntk is not None, upper, triangle="upper" if upper else "")
    if upper:       # complete the fresh outputs in place (no second (N, N) allocation)
        for t in (out, out_ntk) if ntk is not None else (out,):
            arr = t.numpy()
            _run(loops.mirror_upper, n1, t.numel(), arr, arr, True, triangle="lower")
    return out, None if ntk is None else out_ntk


__all__ = ["abrelu_pass", "abrelu_pool", "chain_pass", "applies", "available", "get_native", "mirror_upper", "set_native"]
