"""Empirical NNGP kernel and the neural-tangents style ``empirical_kernel_fn``.

The empirical NNGP of a network (or of one of its layers) is the inner product of its
outputs divided by their size, ``K(x1, x2) = <f(x1), f(x2)> / O``; over random
initialisations at infinite width it converges to the analytic NNGP kernel (Neal 1996;
Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from widelimit.empirical._axes import OutAxes
from widelimit.empirical._blocks import check_block_size
from widelimit._tensors import kernels_tuple, parse_bytes
from widelimit._validate import check_get, warn_if_not_finite
from widelimit.empirical._model import ModelFn, as_tensor, eval_mode
from widelimit.empirical.ntk import _as_impl, empirical_ntk

__all__ = ["empirical_nngp", "empirical_kernel_fn"]

_GETS = ("nngp", "ntk")


def _features(model: nn.Module, mf: ModelFn, x: Tensor, name: str, layer: str | None) -> Tensor:
    """The model output on ``x`` or the output of submodule ``layer`` (forward hook)."""
    if layer is None:
        mf.check(x, name)
        return mf(mf.theta, x)
    captured: list[Tensor] = []
    sub = dict(model.named_modules())[layer]
    handle = sub.register_forward_hook(lambda mod, inp, out: captured.append(out))
    try:
        mf.check(x, name)
        captured.clear()
        mf(mf.theta, x)
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"`layer` {layer!r} was not called in the model's forward pass.")
    out = captured[0]
    if not isinstance(out, Tensor):
        raise TypeError(f"`layer` {layer!r} must output a tensor, got {type(out).__name__}.")
    return out


def empirical_nngp(model: nn.Module, x1: Any, x2: Any = None, *, layer: str | None = None,
                   trace_axes: Sequence[int] | int = (-1,),
                   diagonal_axes: Sequence[int] | int = (), **forward_kwargs: Any) -> Any:
    """Empirical NNGP kernel ``K[i, j] = <f(x1_i), f(x2_j)> / prod(traced sizes)``.

    Args:
        model: any ``torch.nn.Module``; evaluated in eval mode with its buffers.
        x1: ``(N1, ...)``; x2: ``(N2, ...)`` or None (= x1).
        layer: name of a submodule (as in ``model.named_modules()``) whose output is used
            instead of the model output (captured with a forward hook); ``None``: the output.
        trace_axes, diagonal_axes: as in :func:`empirical_ntk` (axes of the per-example
            output of the model or of ``layer``); the traced axes are averaged.
        **forward_kwargs: extra keyword arguments of ``model.forward``.

    Returns:
        ``(N1, N2, *res)`` with the same layout as :func:`empirical_ntk`.
    """
    if layer is not None:
        names = dict(model.named_modules()) if isinstance(model, nn.Module) else {}
        if not isinstance(layer, str) or layer not in names:
            raise ValueError(f"`layer` must name a submodule of the model, got {layer!r}; "
                             f"valid names: {sorted(n for n in names if n)}.")
    mf = _NoGradModel(model, forward_kwargs)
    x1t, was_numpy = as_tensor(x1, "x1", model, forward_kwargs)
    x2t = None if (x2 is None or x2 is x1) else as_tensor(x2, "x2", model, forward_kwargs)[0]
    with eval_mode(model), torch.no_grad():
        f1 = _features(model, mf, x1t, "x1", layer)
        f2 = f1 if x2t is None else _features(model, mf, x2t, "x2", layer)
        if f1.shape[1:] != f2.shape[1:]:
            raise ValueError(f"per-example outputs on `x1` and `x2` differ in shape: "
                             f"{tuple(f1.shape[1:])} vs {tuple(f2.shape[1:])}.")
        axes = OutAxes.make(tuple(f1.shape[1:]), trace_axes, diagonal_axes)
        nd = len(axes.out_shape)
        k = axes.contract(f1.reshape(*f1.shape, 1) if nd else f1.reshape(-1, 1),
                          f2.reshape(*f2.shape, 1) if nd else f2.reshape(-1, 1))
        k = k / axes.trace_size
    warn_if_not_finite([k], "empirical_nngp", " of the model (its outputs overflow)")
    return k.cpu().numpy() if was_numpy else k


class _NoGradModel(ModelFn):
    """A ModelFn that also works for models without trainable parameters."""

    def __init__(self, model: nn.Module, forward_kwargs: dict) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
        self.model, self.names, self.theta = model, [], {}
        self.frozen = {n: p.detach() for n, p in model.named_parameters()}
        self.frozen.update(dict(model.named_buffers()))
        self.kwargs = dict(forward_kwargs)


def empirical_kernel_fn(model: nn.Module, trace_axes: Sequence[int] | int = (-1,),
                        diagonal_axes: Sequence[int] | int = (), *,
                        params: Sequence[str] | None = None,
                        implementation: str = "auto", block_size: int | None = None,
                        max_memory: int | str | None = None) -> Callable[..., Any]:
    """Return ``kernel_fn(x1, x2=None, get=("nngp", "ntk"), **forward_kwargs)``.

    In the style of neural-tangents' ``empirical_kernel_fn``: ``get`` is ``"nngp"``,
    ``"ntk"`` (one kernel) or a tuple of them (a namedtuple with those fields, in that
    order). The NNGP is :func:`empirical_nngp` of the output, the NTK
    :func:`empirical_ntk` with the given options.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    _as_impl(implementation)
    check_block_size(block_size)
    if max_memory is not None:
        parse_bytes(max_memory)

    def kernel_fn(x1: Any, x2: Any = None, get: str | Sequence[str] = _GETS,
                  **forward_kwargs: Any) -> Any:
        single = isinstance(get, str)
        gets = check_get(get, _GETS) or _GETS
        out = {}
        for g in gets:
            if g == "nngp":
                out[g] = empirical_nngp(model, x1, x2, trace_axes=trace_axes,
                                        diagonal_axes=diagonal_axes, **forward_kwargs)
            else:
                out[g] = empirical_ntk(model, x1, x2, trace_axes=trace_axes,
                                       diagonal_axes=diagonal_axes, params=params,
                                       implementation=implementation, block_size=block_size,
                                       max_memory=max_memory, **forward_kwargs)
        if single:
            return out[gets[0]]
        return kernels_tuple(tuple(gets))(**out)

    return kernel_fn
