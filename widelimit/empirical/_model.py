"""Model plumbing shared by the empirical kernels: inputs, parameters, functional forward.

Every empirical kernel evaluates the model *functionally*
(``torch.func.functional_call``) with its buffers, in eval mode (batch norm uses its
running statistics, dropout is off); the model's training flag is restored afterwards.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from widelimit._validate import check_tensor_input

__all__ = ["as_tensor", "eval_mode", "functional_errors", "select_params", "ModelFn"]


def as_tensor(x: Any, name: str, model: nn.Module, forward_kwargs: dict | None = None
              ) -> tuple[Tensor, bool]:
    """Return ``(tensor on the model's device, was_numpy)``; NumPy is cast to the model dtype.
    Float inputs must be finite unless ``forward_kwargs`` pass a ``mask`` / ``mask_constant``
    (NaN padding read by widelimit's masked modules)."""
    was_numpy = isinstance(x, np.ndarray)
    ref = next(iter(model.parameters()), None)
    if was_numpy:
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"`{name}` must be a floating-point array, got dtype {x.dtype}.")
        x = torch.from_numpy(np.ascontiguousarray(x))
        if ref is not None:
            x = x.to(dtype=ref.dtype)
    elif not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}.")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"`{name}` must have a non-empty leading batch axis (N, ...), "
                         f"got shape {tuple(x.shape)}.")
    masked = bool({"mask", "mask_constant"} & set(forward_kwargs or {}))
    if (x.is_floating_point() or x.is_complex()) and not masked:
        check_tensor_input(x, name, min_ndim=1, magnitude=False)
    if ref is not None and x.device != ref.device:
        x = x.to(ref.device)
    return x, was_numpy


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def functional_errors() -> Iterator[None]:
    """Turn torch.func's refusal of a model that writes to a buffer in place (``aten::add_``
    on a step counter, running statistics) into an error that says what to change."""
    try:
        yield
    except RuntimeError as e:
        if "in-place operation" not in str(e):
            raise
        raise RuntimeError(
            "the model modifies a tensor (a buffer such as a step counter or running "
            "statistics) in place in `forward`; the empirical kernels evaluate the model "
            "functionally with torch.func, which forbids that. Skip the update when "
            "`not self.training` (the empirical kernels run the model in eval mode), write it "
            "out of place (`self.count = self.count + 1`), or register the tensor as a plain "
            f"attribute instead of a buffer. torch.func said: {e}") from e


def select_params(model: nn.Module, params: Sequence[str] | None) -> list[str]:
    """Names of the parameters to differentiate (default: all with ``requires_grad``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    named = dict(model.named_parameters())
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
        if not names:
            raise ValueError("`model` has no trainable parameters (none with requires_grad=True); "
                             "the empirical NTK is defined only with respect to parameters.")
        return names
    if isinstance(params, str):
        params = [params]
    names = list(params)
    if not names:
        raise ValueError("`params` must name at least one parameter, got an empty list.")
    for n in names:
        if not isinstance(n, str) or n not in named:
            raise ValueError(f"`params` contains {n!r}, which is not a parameter of the model; "
                             f"valid names (model.named_parameters()): {sorted(named)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"`params` contains duplicate names: {names}.")
    return names


class ModelFn:
    """``f(theta, x)``: the model as a pure function of the selected parameters.

    Attributes:
        names: the differentiated parameter names.
        theta: ``{name: detached tensor}`` for those parameters (the point theta0).
        frozen: every other parameter and buffer, passed unchanged.
    """

    def __init__(self, model: nn.Module, params: Sequence[str] | None = None,
                 forward_kwargs: dict | None = None) -> None:
        self.model = model
        self.names = select_params(model, params)
        named = dict(model.named_parameters())
        self.theta = {n: named[n].detach() for n in self.names}
        self.frozen = {n: p.detach() for n, p in named.items() if n not in self.theta}
        self.frozen.update({n: b for n, b in model.named_buffers()})
        self.kwargs = dict(forward_kwargs or {})

    def __call__(self, theta: dict[str, Tensor], x: Tensor) -> Tensor:
        out = functional_call(self.model, {**self.frozen, **theta}, (x,), self.kwargs,
                              strict=False)
        if not isinstance(out, Tensor):
            raise TypeError(f"the model must return a single tensor of shape (N, ...), "
                            f"got {type(out).__name__}.")
        return out

    def single(self, theta: dict[str, Tensor], x: Tensor) -> Tensor:
        """The model on one example ``x`` (no batch axis); output without batch axis."""
        return self(theta, x.unsqueeze(0)).squeeze(0)

    def check(self, x: Tensor, name: str) -> tuple[int, ...]:
        """Run the model on ``x[:1]``; return the per-example output shape.

        The model's own error on a bad input is re-raised as a ValueError with context.
        """
        try:
            with torch.no_grad():
                out = self(self.theta, x[:1])
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            if isinstance(e, TypeError) and "must return a single tensor" in str(e):
                raise
            raise ValueError(f"the model rejected `{name}` of shape {tuple(x.shape)} "
                             f"(per-example shape {tuple(x.shape[1:])}): {e}") from e
        if out.ndim < 1 or out.shape[0] != 1:
            raise ValueError(f"the model must keep the batch axis: on `{name}`[:1] it returned "
                             f"shape {tuple(out.shape)}, expected (1, ...).")
        return tuple(out.shape[1:])

    def param_count(self) -> int:
        return sum(t.numel() for t in self.theta.values())
