"""Empirical (finite-width) neural tangent kernel of any ``torch.nn.Module``.

``Theta(x1, x2) = J(x1) J(x2)^T`` with ``J(x) = d f(x; theta) / d theta`` (Jacot, Gabriel &
Hongler, "Neural Tangent Kernel", NeurIPS 2018), computed by one of the three methods of
Novak, Sohl-Dickstein & Schoenholz, "Fast Finite Width Neural Tangent Kernel" (ICML 2022).
"""
from __future__ import annotations

import enum
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from widelimit.empirical._axes import OutAxes
from widelimit.empirical._blocks import blocked_kernel, check_block_size
from widelimit.empirical._jacobian import JacobianContraction, NtkVectorProducts
from widelimit._tensors import parse_bytes
from widelimit.empirical._model import ModelFn, as_tensor, eval_mode, functional_errors
from widelimit._validate import warn_if_not_finite
from widelimit.empirical._structured import Structured

__all__ = ["NtkImplementation", "empirical_ntk"]


class NtkImplementation(str, enum.Enum):
    """How to compute the empirical NTK (Novak et al., ICML 2022, Table 1).

    Notation: ``N`` examples, ``O`` outputs per example, ``P`` parameters, ``[FP]`` the cost
    of one forward pass on one example, ``L`` layers of width ``W`` (so ``P ~ L W^2``).

    * ``JACOBIAN_CONTRACTION`` ("jacobian_contraction"): per-example Jacobians by reverse
      mode (``vmap(jacrev)``), then ``J1 J2^T``. Time ``N O [FP] + N1 N2 O^2 P``
      (``N1 N2 O P`` with the output axis traced); memory ``N O P``. Exact for any model.
    * ``NTK_VECTOR_PRODUCTS`` ("ntk_vector_products"): ``Theta v = J1 (J2^T v)`` for each of
      the ``N2 O`` basis cotangents (``vjp`` then ``jvp``); no Jacobian is stored. Time
      ``N1 N2 O [FP]``; memory ``O (N1 + N2) [activations]`` per product in flight. Wins
      when ``P`` is huge and ``N``, ``O`` are small.
    * ``STRUCTURED`` ("structured"): structured derivatives. For ``nn.Linear``/``nn.Conv1d``/
      ``nn.Conv2d``/batch-norm layers the weight Jacobian is an outer product of output
      cotangents and (unfolded) inputs, so each layer's contribution is a product of
      cotangent grams and input grams; other parameters fall back to Jacobians. Time
      ``N O [FP] + N1 N2 O^2 L (W + positions^2 ...)`` instead of ``... L W^2``; memory
      ``N O L W`` instead of ``N O L W^2``.
    * ``AUTO`` ("auto"): estimates the FLOPs of each method for the given model and input
      sizes (the layer shapes found by one forward pass on one example, plugged into the
      formulas above) and picks the cheapest.
    """

    JACOBIAN_CONTRACTION = "jacobian_contraction"
    NTK_VECTOR_PRODUCTS = "ntk_vector_products"
    STRUCTURED = "structured"
    AUTO = "auto"


def _as_impl(implementation: Any) -> NtkImplementation:
    try:
        return NtkImplementation(implementation)
    except ValueError:
        valid = [i.value for i in NtkImplementation]
        raise ValueError(f"`implementation` must be one of {valid}, got {implementation!r}.") \
            from None


def _choose(mf: ModelFn, axes: OutAxes, x1: Tensor, n2: int,
            structured: Structured) -> NtkImplementation:
    """Pick the implementation with the fewest estimated FLOPs (Novak et al. 2022, Table 1).

    One forward pass on one example costs ``[FP] ~ 2 sum_layers C P D`` for the linear and
    conv layers found by the structured pass (``2 P`` per parameter otherwise).
    """
    n1, o, pairs, p = x1.shape[0], axes.out_size, axes.pairs, mf.param_count()
    fwd = max(2 * p, structured.forward_flops())
    jc = 3.0 * (n1 + n2) * o * fwd + 2.0 * n1 * n2 * pairs * p
    vp = 3.0 * n1 * n2 * o * fwd + 3.0 * n2 * o * fwd
    st = structured.flops(n1, n2, fwd) if structured.layers else float("inf")
    costs = {NtkImplementation.STRUCTURED: st, NtkImplementation.JACOBIAN_CONTRACTION: jc,
             NtkImplementation.NTK_VECTOR_PRODUCTS: vp}
    return min(costs, key=costs.get)


def empirical_ntk(model: nn.Module, x1: Any, x2: Any = None, *,
                  trace_axes: Sequence[int] | int = (-1,), diagonal_axes: Sequence[int] | int = (),
                  params: Sequence[str] | None = None,
                  implementation: NtkImplementation | str = "auto",
                  block_size: int | None = None, max_memory: int | str | None = None,
                  **forward_kwargs: Any) -> Any:
    """Empirical NTK ``Theta(x1, x2)[i, j] = <d f(x1_i)/d theta, d f(x2_j)/d theta>``.

    Args:
        model: any ``torch.nn.Module`` mapping ``(N, ...)`` to ``(N, *out)``. Evaluated
            functionally with its buffers, in eval mode (batch norm uses running
            statistics, dropout off); its training flags are restored afterwards.
        x1: ``(N1, ...)`` tensor or NumPy array (NumPy in gives NumPy out).
        x2: ``(N2, ...)`` or ``None`` for ``x2 = x1`` (the symmetric case, computed once).
        trace_axes: per-example output axes (negative allowed) to trace over; the result is
            divided by the product of their sizes (a mean), as in neural-tangents.
        diagonal_axes: output axes of which only the diagonal ``x = x'`` is kept.
        params: names (as in ``model.named_parameters()``) to differentiate; default all
            trainable parameters.
        implementation: see :class:`NtkImplementation`.
        block_size: compute in ``block_size x block_size`` blocks of examples.
        max_memory: memory budget (bytes or a string such as ``"2GB"``) from which a block
            size is chosen when ``block_size`` is not given.
        **forward_kwargs: extra keyword arguments of ``model.forward`` (shared by all
            examples).

    Returns:
        ``(N1, N2, *res)``: each untraced, non-diagonal output axis appears twice
        (neural-tangents' layout ``(N1, N2, X, X, Y, Y, ...)``), diagonal axes once and
        traced axes not at all. Default for an ``(N, O)`` output: ``(N1, N2)``.
    """
    impl = _as_impl(implementation)
    from widelimit.scale.memory import tune_malloc
    tune_malloc()
    block_size = check_block_size(block_size)
    budget = parse_bytes(max_memory) if max_memory is not None else None
    mf = ModelFn(model, params, forward_kwargs)
    x1t, was_numpy = as_tensor(x1, "x1", model, forward_kwargs)
    x2t = None if (x2 is None or x2 is x1) else as_tensor(x2, "x2", model, forward_kwargs)[0]
    with eval_mode(model):
        out_shape = mf.check(x1t, "x1")
        if x2t is not None:
            out2 = mf.check(x2t, "x2")
            if out2 != out_shape:
                raise ValueError(f"the model's per-example outputs on `x1` and `x2` differ in "
                                 f"shape: {out_shape} vs {out2}.")
        axes = OutAxes.make(out_shape, trace_axes, diagonal_axes)
        n2 = x1t.shape[0] if x2t is None else x2t.shape[0]
        structured = None
        if impl in (NtkImplementation.STRUCTURED, NtkImplementation.AUTO):
            structured = Structured(mf, axes, x1t, budget or 2 * 2**30)
        if impl is NtkImplementation.AUTO:
            impl = _choose(mf, axes, x1t, n2, structured)
        runner: Any
        if impl is NtkImplementation.STRUCTURED:
            runner = structured
        elif impl is NtkImplementation.JACOBIAN_CONTRACTION:
            runner = JacobianContraction(mf, axes)
        else:
            runner = NtkVectorProducts(mf, axes)
        if block_size is None and budget is not None:
            per = runner.bytes_per_example(x1t.element_size())
            block_size = max(1, budget // max(1, 2 * per))
        with torch.no_grad(), functional_errors():
            k = blocked_kernel(runner, x1t, x2t, axes, block_size)
        if axes.trace_size != 1:
            k = k / axes.trace_size
    warn_if_not_finite([k], "empirical_ntk", " of the model (its outputs or gradients overflow)")
    return k.detach().cpu().numpy() if was_numpy else k
