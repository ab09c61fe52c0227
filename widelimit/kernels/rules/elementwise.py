"""Apply a nonlinearity's dual to a whole kernel state (nngp, ntk, cov1, cov2)."""
from __future__ import annotations

import types
from typing import Callable

import torch

from widelimit.kernels import _compile, _native
from widelimit.kernels.state import Kernel, pair_variances, self_variances

_FUSED: dict[Callable, Callable] = {}


def unique_code(fn: Callable, name: str) -> Callable:
    """A copy of ``fn`` with its own code object: ``torch.compile`` caches per code object,
    so each nonlinearity gets its own cache entry instead of sharing a recompile limit."""
    code = fn.__code__.replace(co_name=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


def _fused(dual: Callable) -> Callable:
    """``(c, v1, v2, ntk) -> (T, T_dot * ntk)`` for one dual, with its own code object so
    that ``torch.compile`` keeps one cache entry per nonlinearity."""
    fn = _FUSED.get(dual)
    if fn is None:
        def nngp_ntk(c, v1, v2, ntk):
            t, t_dot = dual(c, v1, v2, True)
            return t, t_dot * ntk
        fn = _FUSED[dual] = unique_code(nngp_ntk, f"nngp_ntk_{len(_FUSED)}")
    return fn


def elementwise_rule(k: Kernel, dual: Callable, name: str, pair: bool = True) -> Kernel:
    """T = dual(nngp), ntk' = T_dot * ntk, and the variances through the same dual.

    With ``pair=False`` only the variances and flags are updated (see ``fused.py``).
    """
    if not k.is_gaussian:
        raise ValueError(
            f"{name} needs Gaussian pre-activations: put a random affine layer "
            f"(Dense or Conv) before it. Its input here is "
            f"{'the raw network input' if k.is_input else 'the output of a non-Gaussian layer'}.")
    v1, v2 = pair_variances(k)
    native = getattr(dual, "native", None)
    if native is not None and _native.applies(k.nngp, k.ntk, k.cov1, k.cov2):
        return native_rule(k, native, v1, v2, (1.0, 0.0, 0.0, 1.0, 0.0), pair)
    if not pair:
        nngp, ntk = k.nngp, k.ntk
    elif k.ntk is None:
        nngp, ntk = dual(k.nngp, v1, v2, False)[0], None
    elif not getattr(dual, "no_compile", False) and _compile.will_compile(k.nngp, k.ntk):
        nngp, ntk = _compile.run(_fused(dual), k.nngp, v1, v2, k.ntk)
    else:
        nngp, t_dot = dual(k.nngp, v1, v2, True)
        ntk = t_dot * k.ntk
    if pair and k.x1_is_x2:
        # x1 against itself: cov1 *is* the batch diagonal of the new nngp, bit for bit
        # (evaluated apart, a transcendental may round differently in a vectorised loop
        # and its scalar tail)
        cov1 = torch.diagonal(nngp, 0, 0, 1).movedim(-1, 0).clone()
    else:
        cov1 = dual(k.cov1, *self_variances(k, k.cov1), False)[0]
    cov2 = None if k.cov2 is None else dual(k.cov2, *self_variances(k, k.cov2), False)[0]
    return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, is_gaussian=False)


def native_rule(k: Kernel, params: tuple, v1, v2, affine: tuple, pair: bool = True) -> Kernel:
    """:func:`elementwise_rule` through the one-pass loops of :mod:`widelimit.kernels._native`;
    ``affine`` is the map from ``k.nngp`` / ``k.ntk`` to the dual's input (see there).  The
    variances go through the same loop, so a diagonal entry and its variance agree."""
    nngp, ntk = k.nngp, k.ntk
    if pair:
        nngp, ntk = _native.abrelu_pass(params, k.nngp, k.ntk, v1, v2, affine, k.upper)
    cov1 = _native.abrelu_pass(params, k.cov1, None, *self_variances(k, k.cov1))[0]
    cov2 = None if k.cov2 is None else _native.abrelu_pass(params, k.cov2, None,
                                                           *self_variances(k, k.cov2))[0]
    return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, is_gaussian=False)


__all__ = ["elementwise_rule", "native_rule"]
