"""A Dense layer and the nonlinearity after it, in one pass (a native loop or torch.compile).

For large kernels the cost is memory traffic: eagerly, Dense reads and writes the
(N1, N2) nngp and ntk matrices three times and the nonlinearity once more.  When
``torch.compile`` is in use (see ``widelimit.kernels._compile``) this rule composes
:func:`~widelimit.kernels.rules.affine.dense_pair` and the nonlinearity's dual in one
function, so Inductor emits a single loop.  It reuses both rules unchanged (the
variances, shapes and flags come from ``dense_rule(pair=False)`` and
``elementwise_rule(pair=False)``), so no formula is written twice.  Rectifiers on CPU
take the numba loop of :mod:`widelimit.kernels._native` instead, with the Dense layer as
its affine map (:func:`~widelimit.kernels.rules.affine.dense_coefficients`).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from widelimit._tensors import syrk_upper, upper_to_full
from widelimit.kernels import _compile, _native
from widelimit.kernels.rules.affine import dense_coefficients, dense_pair
from widelimit.kernels.rules.elementwise import elementwise_rule, native_rule, unique_code
from widelimit.kernels.rules.attention import attention_output
from widelimit.kernels.rules.pool import global_pool_rule
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


def _coefficients(dense, k: Kernel) -> tuple:
    """The Dense layer's map as :func:`dense_coefficients`, with W_std * W_std and
    b_std * b_std rounded as ``affine`` rounds them for the variances (so that a diagonal
    entry and its variance stay equal bit for bit)."""
    b2 = 0.0 if dense.b_std is None else dense.b_std * dense.b_std
    return dense_coefficients(dense.W_std * dense.W_std, b2, float(dense.input_width(k)),
                              dense.parameterization == "ntk", dense.b_std is not None)


def fused_dense_elementwise(k: Kernel, dense, nonlinearity) -> Optional[Kernel]:
    """``nonlinearity(dense(k))`` in one pass, or None when that does not apply (no NTK,
    differentiable hyperparameters, neither a native loop (:mod:`widelimit.kernels._native`)
    nor ``torch.compile`` for this nonlinearity or size)."""
    if k.ntk is None or k.n_spatial or isinstance(dense.W_std, Tensor) or isinstance(dense.b_std, Tensor):
        return None
    dual = nonlinearity.dual()
    native = getattr(dual, "native", None)
    if native is not None and _native.applies(k.nngp, k.ntk, k.cov1, k.cov2):
        kd = dense.apply_kernel(k, pair=False)
        return native_rule(kd, native, *pair_variances(kd), _coefficients(dense, k))
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


def native_chain(k: Kernel, pairs: Sequence) -> Optional[tuple[Kernel, int]]:
    """The leading ``(dense, nonlinearity or None)`` pairs of a serial network applied to a
    vector kernel in one native pass (:func:`widelimit.kernels._native.chain_pass`), and how
    many layers that took; the run stops before a nonlinearity without a native loop or a
    differentiable hyperparameter.  None when the run has no rectifier or the loops do not
    apply.  Only the (N1, N2) matrices go through the loop; the variances, shapes and
    flags come from the layers' own rules (``pair=False``), so no formula is written twice."""
    if (k.n_spatial or k.nngp.ndim != 2 or not _native.applies(k.nngp, k.ntk, k.cov1, k.cov2)
            or (k.ntk is not None and k.ntk.ndim not in (0, 2))):
        return None
    run = []        # the layers the loop can take, before any kernel arithmetic
    for dense, nonlinearity in pairs:
        dual = None if nonlinearity is None else nonlinearity.dual()
        native = getattr(dual, "native", None)
        if (isinstance(dense.W_std, Tensor) or isinstance(dense.b_std, Tensor)
                or (nonlinearity is not None and native is None)):
            break
        run.append((dense, nonlinearity, dual, native))
    if not any(native is not None for *_, native in run):
        return None
    plan, used, state = [], 0, k
    for dense, nonlinearity, dual, native in run:
        kd = dense.apply_kernel(state, pair=False)
        affine = _coefficients(dense, state)
        if nonlinearity is None:
            plan.append((affine, None, None, None))
            state, used = kd, used + 1
        else:
            plan.append((affine, native, kd.cov1, kd.cov1 if kd.cov2 is None else kd.cov2))
            state = elementwise_rule(kd, dual, type(nonlinearity).__name__, pair=False)
            used += 2
    nngp, ntk = _native.chain_pass(k.nngp, k.ntk, plan, k.upper, overwrite=k.scratch)
    return state.replace(nngp=nngp, ntk=ntk, upper=False, scratch=False), used   # complete


def native_attention_pool(k: Kernel, attention, nonlinearity, average: bool) -> Optional[Kernel]:
    """``GlobalSelfAttention``, a rectifier and global pooling of raw inputs against
    themselves, from the attention's factor rows F (nngp' = F F^T + b^2, ntk' = 2 F F^T + b^2,
    ``GlobalSelfAttention.factor_rows``): F F^T by BLAS ``syrk`` (half the product; the
    pooled pass reads only pairs b >= a, which lie above the diagonal of the flattened
    (N P, N P) matrix but for the lower halves of the diagonal blocks, filled in here), and
    the affine maps to nngp' / ntk' inside :func:`native_pool`'s loop (neither is stored).
    cov1' is the batch diagonal of nngp' (the diagonal blocks), as after the other rules;
    the state is assembled by the attention rule's own ``attention_output``.  None when
    this does not apply."""
    if not k.x1_is_x2 or getattr(nonlinearity.dual(), "native", None) is None:
        return None
    f = attention.factor_rows(k)
    if f is None or not _native.applies(f, k.cov1):
        return None
    n, p, c = f.shape
    up = syrk_upper(f.reshape(n * p, c))
    if up is None:
        return None
    blocks = up.view(n, p, n, p).diagonal(dim1=0, dim2=2).permute(2, 0, 1)   # (N, P, P) views
    blocks.copy_(upper_to_full(blocks))
    b2 = 0.0 if attention.b_std is None else float(attention.b_std) ** 2
    # F F^T stands in for nngp; the maps to nngp' and ntk' (from the inputs' zero NTK) are
    # the loop's affine map
    ka = attention_output(k, {"nngp": up.view(n, p, n, p).transpose(1, 2), "ntk": k.ntk,
                              "cov1": blocks + b2, "cov2": None}, attention.n_chan_out)
    return native_pool(ka, nonlinearity, average, affine=(1.0, b2, 2.0, 0.0, b2))


def native_pool(k: Kernel, nonlinearity, average: bool,
                affine: tuple = (1.0, 0.0, 0.0, 1.0, 0.0)) -> Optional[Kernel]:
    """``GlobalAvgPool`` (``average``) or ``GlobalSumPool`` of ``nonlinearity(k)`` for a
    full-spatial kernel in one native pass (:func:`widelimit.kernels._native.abrelu_pool`):
    the (N1, N2, S1, S1', ...) results are summed as they are made, never stored, and for
    x1 against itself only half of the input pairs are visited.  None when that does not
    apply (masks, no native loop for this nonlinearity, a state the rules would reject).
    The variances and flags come from the layers' own rules, as for the chains above.
    ``affine``: the map from ``k.nngp`` / ``k.ntk`` to the pre-activation kernels (as in
    ``abrelu_pass``; :func:`native_attention_pool`), whose variances ``k.cov1`` holds."""
    if not k.n_spatial or k.diagonal_spatial or k.upper or not k.is_gaussian \
            or k.mask1 is not None or k.mask2 is not None:
        return None
    native = getattr(nonlinearity.dual(), "native", None)
    if native is None or not _native.applies(k.nngp, k.ntk, k.cov1, k.cov2):
        return None
    v1, v2 = pair_variances(k)
    nngp, ntk = _native.abrelu_pool(native, k.nngp, k.ntk, v1, v2, symmetric=k.x1_is_x2,
                                    affine=affine)
    sums = {"nngp": nngp, "ntk": ntk}
    if k.x1_is_x2:
        # x1 against itself: each input's own pooled covariance is the batch diagonal of
        # the pooled nngp (as after the torch duals, elementwise_rule), bit for bit
        sums["cov1"] = torch.diagonal(nngp).clone()
        ke = k.replace(is_gaussian=False)
    else:
        ke = native_rule(k, native, v1, v2, affine, pair=False)
    return global_pool_rule(ke, average, sums=sums)
