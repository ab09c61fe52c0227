"""Infinite-dimension registry: which dimensions of which parameters are widths.

Width dimensions are found as in the ``mup`` package (Yang et al. 2022,
"Tensor Programs V", Appendix: ``set_base_shapes``): a dimension is a width
if it differs between a *base* model and a *delta* model (or, without a
delta, between the base and the model itself).  Unlike ``mup`` the result is
an explicit :class:`Registry` keyed by parameter name and stored on the model
(``model.widelimit_registry``); nothing is attached to tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from widelimit.parametrization.abc import ABC

__all__ = ["ParamInfo", "Registry", "infer_dims", "owner_modules"]

Shape = tuple[int, ...]


@dataclass
class ParamInfo:
    """Width bookkeeping and scale factors for one parameter.

    Attributes:
        name: the parameter's name in ``model.named_parameters()``.
        shape, base_shape: shapes in the model and the base model.
        inf: which dimensions are widths.
        role: ``"input"``, ``"hidden"``, ``"output"`` (matrices), ``"vector"``
            (one width dimension, e.g. a bias) or ``"fixed"`` (no width).
        fan_in_mult, fan_out_mult: ``dim / base_dim`` of the fan-in/-out
            dimensions (1 for non-width dimensions).
        init_scale: factor applied to the default initialisation.
        multiplier: forward multiplier ``n^{-a}``.
        lr_sgd, lr_adam: learning-rate factors for SGD- and Adam-like optimisers
            (``lr_adam`` includes depth-muP's ``sqrt(base_depth / depth)`` for
            parameters inside residual branches).
    """

    name: str
    shape: Shape
    base_shape: Shape
    inf: tuple[bool, ...]
    role: str
    fan_in_mult: float = 1.0
    fan_out_mult: float = 1.0
    init_scale: float = 1.0
    multiplier: float = 1.0
    lr_sgd: float = 1.0
    lr_adam: float = 1.0

    @property
    def ninf(self) -> int:
        """Number of width dimensions."""
        return sum(self.inf)

    def lr_scale(self, kind: str) -> float:
        """Learning-rate factor for ``kind`` in ``{"sgd", "adam"}``."""
        if kind == "sgd":
            return self.lr_sgd
        if kind == "adam":
            return self.lr_adam
        raise ValueError(f"optimizer kind must be 'sgd' or 'adam', got {kind!r}")


@dataclass
class Registry:
    """Per-model parametrization state (picklable; survives ``torch.save``)."""

    scheme: ABC
    params: dict[str, ParamInfo] = field(default_factory=dict)
    branch_multiplier: float = 1.0
    residual_branches: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> ParamInfo:
        return self.params[name]

    def __contains__(self, name: object) -> bool:
        return name in self.params

    def __len__(self) -> int:
        return len(self.params)

    def roles(self) -> dict[str, str]:
        """Parameter name -> layer role."""
        return {k: v.role for k, v in self.params.items()}


def owner_modules(model: nn.Module) -> dict[str, tuple[str, nn.Module, str]]:
    """Parameter name -> (module name, module, local parameter name)."""
    out: dict[str, tuple[str, nn.Module, str]] = {}
    for mname, mod in model.named_modules():
        for pname, _ in mod.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            out.setdefault(full, (mname, mod, pname))
    return out


def _shapes(x: nn.Module | dict[str, Iterable[int]], what: str) -> dict[str, Shape]:
    if isinstance(x, nn.Module):
        return {k: tuple(p.shape) for k, p in x.named_parameters()}
    if isinstance(x, dict):
        return {k: tuple(v) for k, v in x.items()}
    raise TypeError(
        f"{what} must be an nn.Module or a dict of parameter shapes, got {type(x).__name__}"
    )


def infer_dims(
    model: nn.Module,
    base: nn.Module | dict[str, Iterable[int]],
    delta: nn.Module | dict[str, Iterable[int]] | None = None,
) -> dict[str, tuple[Shape, Shape, tuple[bool, ...]]]:
    """Compare ``model`` with ``base`` (and ``delta``): name -> (shape, base shape, inf mask).

    Raises:
        ValueError: parameter names or ranks differ, a non-width dimension
            changed, or a width dimension is smaller than in the base.
    """
    shapes = _shapes(model, "model")
    base_shapes = _shapes(base, "base")
    ref = base_shapes if delta is None else _shapes(delta, "delta")
    for other, label in ((base_shapes, "base"), (ref, "delta")):
        if set(other) != set(shapes):
            extra, missing = sorted(set(other) - set(shapes)), sorted(set(shapes) - set(other))
            raise ValueError(
                f"model and {label} have different parameters (in {label} only: {extra[:5]}, "
                f"in model only: {missing[:5]}); build {label} with the same constructor as "
                "the model, changing only the width arguments"
            )
    out: dict[str, tuple[Shape, Shape, tuple[bool, ...]]] = {}
    for name, shape in shapes.items():
        bsh, dsh = base_shapes[name], ref[name]
        if not (len(shape) == len(bsh) == len(dsh)):
            raise ValueError(
                f"parameter {name!r} has rank {len(shape)} in the model but {len(bsh)} in the "
                f"base / {len(dsh)} in delta; the models must share one architecture"
            )
        if delta is None:
            inf = tuple(s != b for s, b in zip(shape, bsh))
        else:
            inf = tuple(d != b for d, b in zip(dsh, bsh))
            for i, (s, b) in enumerate(zip(shape, bsh)):
                if not inf[i] and s != b:
                    raise ValueError(
                        f"dimension {i} of {name!r} is {s} in the model but {b} in the base, "
                        "and base and delta agree on it, so it is not a width; make delta "
                        "differ from base in every dimension you scale"
                    )
        for i, (s, b) in enumerate(zip(shape, bsh)):
            if inf[i] and s < b:
                raise ValueError(
                    f"width dimension {i} of {name!r} shrinks from {b} (base) to {s} (model); "
                    "the base must be the narrowest model: build base with the smallest width"
                )
        out[name] = (shape, bsh, inf)
    return out


def classify(
    mod: nn.Module, local: str, shape: Shape, bshape: Shape, inf: tuple[bool, ...]
) -> tuple[str, float, float]:
    """Role, fan-in multiplier and fan-out multiplier of one parameter."""
    mult = [s / b for s, b in zip(shape, bshape)]
    if len(shape) == 0 or not any(inf):
        return "fixed", 1.0, 1.0
    if len(shape) == 1:
        return "vector", 1.0, mult[0]
    if any(inf[2:]):
        raise ValueError(
            f"width dimension in position >= 2 of a parameter of shape {shape} "
            f"({type(mod).__name__}.{local}) is unsupported; only (fan_out, fan_in, ...) "
            "dimensions may scale with width"
        )
    if isinstance(mod, nn.Embedding) and local == "weight":
        i_in, i_out = 0, 1  # (num_embeddings, embedding_dim): a lookup is an input layer
    else:
        i_in, i_out = 1, 0
    fin, fout = inf[i_in], inf[i_out]
    m_in, m_out = (mult[i_in] if fin else 1.0), (mult[i_out] if fout else 1.0)
    role = "hidden" if fin and fout else ("output" if fin else "input")
    return role, m_in, m_out


def default_init_fan_in_exponent(mod: nn.Module, local: str, ndim: int) -> bool:
    """Whether PyTorch's default init of this parameter scales like fan_in^{-1/2}."""
    if isinstance(mod, nn.Embedding):
        return False
    if ndim >= 2:
        return True
    # biases of Linear / Conv layers are U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    return local == "bias" and isinstance(getattr(mod, "weight", None), torch.Tensor) and mod.weight.ndim >= 2
