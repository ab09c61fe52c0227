"""The numba loops behind :mod:`widelimit.kernels._native` (imported only there).

``theta(y, x) = atan2(y, x)`` for ``y >= 0`` without branches: with ``lo, hi`` the
smaller and larger of ``y, |x|`` and ``t = lo / hi`` in [0, 1],

    atan(t) = pi/4 + atan((lo - hi) / (lo + hi))      for t above the reduction point

then ``pi/2 - .`` where ``y > |x|`` and ``pi - .`` where ``x < 0``.  The reduced
argument goes through Cephes' ``atanf`` polynomial (float32, |t| <= tan(pi/8)) or
``atan`` rational function P(z)/Q(z) (float64, |t| <= 0.66), both in z = t^2
(S. L. Moshier, Cephes Math Library, 1984-2000).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

FLAGS = dict(nogil=True, cache=True, error_model="numpy",
             fastmath={"nsz"})   # IEEE arithmetic otherwise: no FMA contraction or approximate
# reciprocals, so that every loop (vectorised or not) rounds an entry alike and a diagonal
# entry equals its variance bit for bit; no "nnan"/"ninf": NaN stays NaN

_P64 = (-8.750608600031904122785e-1, -1.615753718733365076637e1, -7.500855792314704667340e1,
        -1.228866684490136173410e2, -6.485021904942025371773e1)
_Q64 = (2.485846490142306297962e1, 1.650270098316988542046e2, 4.328810604912902668951e2,
        4.853903996359136964868e2, 1.945506571482613964425e2)
_P32 = (8.05374449538e-2, -1.38776856032e-1, 1.99777106478e-1, -3.33329491539e-1)


def theta(y, x):  # pragma: no cover - replaced by the overload inside numba
    return math.atan2(y, x)


def _theta32(y, x):
    ax = abs(x)
    hi = max(y, ax)
    lo = min(y, ax)
    # lo / hi above tan(pi/8): atan(lo / hi) = pi/4 + atan((lo - hi) / (lo + hi)); one division
    big = lo > np.float32(0.41421356237309503) * hi
    den = lo + hi if big else hi
    r = (lo - hi if big else lo) / den if den > np.float32(0.0) else np.float32(0.0)
    z = r * r
    p = (((np.float32(_P32[0]) * z + np.float32(_P32[1])) * z + np.float32(_P32[2])) * z
         + np.float32(_P32[3])) * z * r + r
    p = p + np.float32(math.pi / 4) if big else p
    p = np.float32(math.pi / 2) - p if y > ax else p
    return np.float32(math.pi) - p if x < np.float32(0.0) else p


def _theta64(y, x):
    ax = abs(x)
    hi = max(y, ax)
    lo = min(y, ax)
    big = lo > 0.66 * hi
    den = lo + hi if big else hi
    r = (lo - hi if big else lo) / den if den > 0.0 else 0.0
    z = r * r
    num = (((_P64[0] * z + _P64[1]) * z + _P64[2]) * z + _P64[3]) * z + _P64[4]
    q = ((((z + _Q64[0]) * z + _Q64[1]) * z + _Q64[2]) * z + _Q64[3]) * z + _Q64[4]
    p = r + r * z * num / q
    p = p + (math.pi / 4 + 3.061616997868383e-17) if big else p
    p = (math.pi / 2 + 6.123233995736766e-17) - p if y > ax else p
    return (math.pi + 1.2246467991473532e-16) - p if x < 0.0 else p


@overload(theta, jit_options=dict(fastmath=FLAGS["fastmath"], error_model="numpy"))
def _theta_overload(y, x):
    return _theta32 if y == types.float32 else _theta64


@njit(inline="always", **{k: v for k, v in FLAGS.items() if k != "cache"})
def _affine(x, k, alpha, beta, gamma, delta, eps):
    """The affine map before the dual: (nngp, ntk) -> (alpha x + beta, gamma x + delta k + eps)."""
    return alpha * x + beta, gamma * x + delta * k + eps


@njit(inline="always", **{k: v for k, v in FLAGS.items() if k != "cache"})
def _entry(x, k, p, f, ab, shrink, alpha, beta, gamma, delta, eps, pi, zero):
    """One kernel entry: (T, ntk') from the input nngp ``x``, ntk ``k`` and ``p = v1 v2``."""
    c, kc = _affine(x, k, alpha, beta, gamma, delta, eps)
    d = math.sqrt(max(p * shrink - c * c, zero))
    pm = pi - theta(d, c)
    return f * (d + pm * c) + ab * c, kc * (f * pm + ab)


@njit(inline="always", **{k: v for k, v in FLAGS.items() if k != "cache"})
def _row(x, k, p, scale, out, out_ntk, prm, has_ntk):
    """One row: ``out[j], out_ntk[j]`` from ``x[j]``, ``k[j]`` and ``p = scale * p[j]``."""
    f, ab, shrink, alpha, beta, gamma, delta, eps, pi = prm[0], prm[1], prm[2], prm[3], prm[4], prm[5], prm[6], prm[7], prm[8]
    zero = f - f
    if has_ntk:
        for j in range(x.shape[0]):
            out[j], out_ntk[j] = _entry(x[j], k[j], scale * p[j], f, ab, shrink, alpha, beta, gamma,
                                        delta, eps, pi, zero)
    else:
        for j in range(x.shape[0]):
            out[j] = _entry(x[j], x[j], scale * p[j], f, ab, shrink, alpha, beta, gamma, delta, eps,
                            pi, zero)[0]


@njit(**FLAGS)
def abrelu_rows(x, k, v1, v2, out, out_ntk, prm, has_ntk, upper, r0, r1):
    """Rows r0..r1 of an (N1, N2) kernel with variances v1 (N1,) and v2 (N2,);
    ``prm = (f, ab, shrink, alpha, beta, gamma, delta, eps, pi)`` in the input's dtype.
    ``upper``: only entries j >= i are computed, zeros are written below the diagonal."""
    for i in range(r0, r1):
        s = min(i, x.shape[1]) if upper else 0
        out[i, :s] = 0
        if has_ntk:
            out_ntk[i, :s] = 0
        _row(x[i, s:], k[i, s:], v2[s:], v1[i], out[i, s:], out_ntk[i, s:], prm, has_ntk)


@njit(**FLAGS)
def abrelu_flat(x, k, p, out, out_ntk, prm, has_ntk, r0, r1):
    """Rows r0..r1 of a kernel reshaped to (rows, cols), with ``p = v1 v2`` of the same shape."""
    one = prm[2] / prm[2]             # 1 in the input dtype (an integer 1 would promote to float64)
    for i in range(r0, r1):
        _row(x[i], k[i], p[i], one, out[i], out_ntk[i], prm, has_ntk)


@njit(inline="always", **{k: v for k, v in FLAGS.items() if k != "cache"})
def _affine_row(x, k, prm, out, out_ntk):
    """One row through an affine map only: ``alpha x + beta``, ``gamma x + delta k + eps``."""
    alpha, beta, gamma, delta, eps = prm[0], prm[1], prm[2], prm[3], prm[4]
    for j in range(x.shape[0]):
        out[j], out_ntk[j] = _affine(x[j], k[j], alpha, beta, gamma, delta, eps)


@njit(**FLAGS)
def chain_rows(x, k, k0, v1, v2, prm, out, out_ntk, has_ntk, upper, r0, r1):
    """Rows r0..r1 of a chain of layers applied entry by entry, each row in cache.

    ``x`` (N1, N2) is the input nngp, ``k`` its ntk (or, when ``k0`` is not NaN, the
    constant ``k0``); layer ``l`` is the affine map ``prm[l, 3:8]`` (alpha, beta, gamma,
    delta, eps), then, when ``prm[l, 9]`` is 1, ABRelu with ``f, ab, shrink, pi =
    prm[l, (0, 1, 2, 8)]`` (the layout of :func:`abrelu_rows`) and variances ``v1[l]``
    (N1,), ``v2[l]`` (N2,).  Rows are copied with explicit loops (numba's slice
    assignment is several times slower) and ping-pong between two row buffers."""
    n2 = x.shape[1]
    zero = prm[0, 2] - prm[0, 2]
    buf = np.empty((4, n2), dtype=x.dtype)
    const_k = k0 == k0
    for i in range(r0, r1):
        s = min(i, n2) if upper else 0
        m = n2 - s
        xa, ka, xb, kb = buf[0, :m], buf[1, :m], buf[2, :m], buf[3, :m]
        xi, ki, oi, oki = x[i], k[i], out[i], out_ntk[i]
        for j in range(s):
            oi[j] = zero
            oki[j] = zero
        for j in range(m):
            xa[j] = xi[s + j]
            ka[j] = ki[s + j] if has_ntk and not const_k else zero
        if has_ntk and const_k:
            for j in range(m):
                ka[j] = k0
        for layer in range(prm.shape[0]):
            if prm[layer, 9] == 0:
                _affine_row(xa, ka, prm[layer, 3:], xb, kb)
            else:
                _row(xa, ka, v2[layer, s:], v1[layer, i], xb, kb, prm[layer], True)
            xa, ka, xb, kb = xb, kb, xa, ka
        for j in range(m):
            oi[s + j] = xa[j]
            oki[s + j] = ka[j]


@njit(**FLAGS)
def mirror_upper(a, out, lower_only, r0, r1):
    """Rows r0..r1 of ``out``: ``a`` on and above the diagonal, its transpose below.  With
    ``lower_only`` only the entries below the diagonal are written: ``out`` may be ``a``
    itself (completing an upper triangle in place).

    Below the diagonal, bands of 8 rows are filled column by column from contiguous
    reads of ``a``'s rows: each written cache line stays in L1 until it is full.  (This
    was 2x faster than 32 x 32 blocks on AVX-512 and AVX2, whose stride of N rows hit
    the same cache sets at N = 2000 and 4000.)"""
    n = a.shape[0]
    b = 8
    for i0 in range(r0, r1, b):
        i1 = min(i0 + b, r1)
        for j in range(i0):                  # columns left of the band's diagonal block
            row = a[j]
            for i in range(i0, i1):
                out[i, j] = row[i]
        for i in range(i0, i1):              # the diagonal block, and the upper part
            for j in range(i0, i):
                out[i, j] = a[j, i]
            if not lower_only:
                for j in range(i, n):
                    out[i, j] = a[i, j]


@njit(**FLAGS)
def abrelu_pool(x, k, w1, w2, prm, has_ntk, interleaved, symmetric, out, out_ntk, r0, r1):
    """Rows r0..r1 of ``out[a, b]`` (and ``out_ntk``): the sum over all position pairs of
    ABRelu's ``(T, ntk')`` for the input pair (a, b) (the nonlinearity, then global pooling).

    ``interleaved``: ``x`` is (N1, R, N2, C), the layout (x1, p, x2, q) of a product of
    factors, with variance products ``w1[a, r, 0] * w2[b, 0, c]``; a row ``x[a, r]``
    covers every b, and is summed into per-(b, c) lanes.  Otherwise ``x`` is
    (N1, N2, R, C) with ``w1[a, r, c] * w2[b, r, c]``, summed into C lanes.  The lanes
    are added up at the end (vectorised sums, no reassociation).  ``symmetric`` (x1 is
    x2): only b >= a is computed, and mirrored."""
    n2 = out.shape[1]
    c = x.shape[3]
    zero = prm[2] - prm[2]
    one = prm[2] / prm[2]
    width = n2 * c if interleaved else c
    buf = np.empty((5, width), dtype=x.dtype)
    t, tk, acc, acck, p = buf[0], buf[1], buf[2], buf[3], buf[4]
    for a in range(r0, r1):
        s = a if symmetric else 0
        if interleaved:
            m = (n2 - s) * c
            v2 = w2.reshape(-1)[s * c:]
            for j in range(m):
                acc[j] = zero
                acck[j] = zero
            for r in range(x.shape[1]):
                _row(x[a, r].reshape(-1)[s * c:], k[a, r].reshape(-1)[s * c:], v2, w1[a, r, 0],
                     t[:m], tk[:m], prm, has_ntk)
                _accumulate(acc, acck, t, tk, m, has_ntk)
            for b in range(s, n2):
                _finish(out, out_ntk, a, b, acc[(b - s) * c:(b - s + 1) * c],
                        acck[(b - s) * c:(b - s + 1) * c], zero, symmetric)
            continue
        for b in range(s, n2):
            for j in range(c):
                acc[j] = zero
                acck[j] = zero
            for r in range(x.shape[2]):
                wa, wb = w1[a, r], w2[b, r]
                for j in range(c):
                    p[j] = wa[j] * wb[j]
                _row(x[a, b, r], k[a, b, r], p, one, t, tk, prm, has_ntk)
                _accumulate(acc, acck, t, tk, c, has_ntk)
            _finish(out, out_ntk, a, b, acc, acck, zero, symmetric)


@njit(inline="always", **{k: v for k, v in FLAGS.items() if k != "cache"})
def _accumulate(acc, acck, t, tk, m, has_ntk):
    for j in range(m):
        acc[j] += t[j]
    if has_ntk:
        for j in range(m):
            acck[j] += tk[j]


@njit(inline="always", **{k: v for k, v in FLAGS.items() if k != "cache"})
def _finish(out, out_ntk, a, b, acc, acck, zero, symmetric):
    """``out[a, b]`` (and ``[b, a]``): the sum of the lanes ``acc``, ``acck``."""
    s, sk = zero, zero
    for j in range(acc.shape[0]):
        s += acc[j]
        sk += acck[j]
    out[a, b] = s
    out_ntk[a, b] = sk
    if symmetric:
        out[b, a] = s
        out_ntk[b, a] = sk
