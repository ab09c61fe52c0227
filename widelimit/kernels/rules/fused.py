"""A Dense layer and the nonlinearity after it, in one compiled pass.

For large kernels the cost is memory traffic: eagerly, Dense reads and writes the
(N1, N2) nngp and ntk matrices three times and the nonlinearity once more.  When
``torch.compile`` is in use (see ``widelimit.kernels._compile``) this rule composes
:func:`~widelimit.kernels.rules.affine.dense_pair` and the nonlinearity's dual in one
function, so Inductor emits a single loop.  It reuses both rules unchanged (the
variances, shapes and flags come from ``dense_rule(pair=False)`` and
``elementwise_rule(pair=False)``), so no formula is written twice.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from widelimit.kernels import _compile
from widelimit.kernels.rules.affine import dense_pair
from widelimit.kernels.rules.elementwise import elementwise_rule, unique_code
from widelimit.kernels.state import Kernel, pair_variances

_FNS: dict[tuple, Callable] = {}


def _function(dual: Callable, ntk_param: bool, bias: bool) -> Callable:
    key = (dual, ntk_param, bias)
    fn = _FNS.get(key)
    if fn is None:
        def dense_then_dual(nngp, ntk, v1, v2, w2, b2, width):
            c, ntk = dense_pair(nngp, ntk, w2, b2, width, ntk_param, bias)
            t, t_dot = dual(c, v1, v2, True)
            return t, t_dot * ntk
        fn = _FNS[key] = unique_code(dense_then_dual, f"dense_then_dual_{len(_FNS)}")
    return fn


def fused_dense_elementwise(k: Kernel, dense, nonlinearity) -> Optional[Kernel]:
    """``nonlinearity(dense(k))`` in one compiled pass, or None when that does not apply
    (no NTK, differentiable hyperparameters, a quadrature nonlinearity, small kernels)."""
    if k.ntk is None or k.n_spatial or isinstance(dense.W_std, Tensor) or isinstance(dense.b_std, Tensor):
        return None
    dual = nonlinearity.dual()
    if getattr(dual, "no_compile", False) or not _compile.will_compile(k.nngp, k.ntk):
        return None
    kd = dense.apply_kernel(k, pair=False)
    v1, v2 = pair_variances(kd)
    opts = dict(dtype=k.nngp.dtype, device=k.nngp.device)
    b2 = 0.0 if dense.b_std is None else dense.b_std ** 2
    fn = _function(dual, dense.parameterization == "ntk", dense.b_std is not None)
    nngp, ntk = _compile.run(fn, k.nngp, k.ntk, v1, v2, torch.tensor(dense.W_std ** 2, **opts),
                             torch.tensor(b2, **opts), torch.tensor(float(dense.input_width(k)), **opts))
    ke = elementwise_rule(kd, dual, type(nonlinearity).__name__, pair=False)
    return ke.replace(nngp=nngp, ntk=ntk)
