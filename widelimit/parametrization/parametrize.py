"""Apply an abc-parametrization to a ``torch.nn.Module``.

``parametrize(model, base=base, scheme="mup")`` compares ``model`` with a
narrow ``base`` (Tensor Programs V, Sec. 4, "muTransfer"), records the width
multiplier ``n = width / base_width`` of every parameter in an explicit
registry, rescales the initialisation by ``n^{-b}`` relative to PyTorch's
default ``1/sqrt(fan_in)`` and installs the multipliers ``n^{-a}`` as forward
pre-hooks.  The learning-rate factors ``n^{-c}`` are applied by
:func:`widelimit.param_groups` and the optimisers in :mod:`widelimit.optim`.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.utils.weak import WeakIdKeyDictionary

from widelimit.parametrization.abc import ABC, get_scheme
from widelimit.parametrization.registry import (
    ParamInfo,
    Registry,
    classify,
    default_init_fan_in_exponent,
    infer_dims,
    owner_modules,
)

__all__ = ["parametrize", "get_registry", "is_parametrized", "lookup", "REGISTRY_ATTR"]

REGISTRY_ATTR = "widelimit_registry"

# Parameter -> (registry, name).  Keyed by object identity, holds no strong
# reference to the parameter and puts nothing on the tensor itself.
_INDEX: WeakIdKeyDictionary = WeakIdKeyDictionary()


class _InputScale:
    """Forward pre-hook computing ``layer(alpha * x)``: a weight multiplier
    ``n^{-a}`` for a linear/conv layer whose bias is not multiplied (this is how
    ``MuReadout`` applies its ``1/width`` multiplier)."""

    def __init__(self, alpha: float) -> None:
        self.alpha = float(alpha)

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (args[0] * self.alpha,) + tuple(args[1:])


class _OutputScale:
    """Forward hook multiplying a residual branch by ``(L / L_0)^{-1/2}``."""

    def __init__(self, alpha: float) -> None:
        self.alpha = float(alpha)

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output * self.alpha


def _factors(scheme: ABC, role: str, m_in: float, m_out: float, default_fan_in: bool,
             module_fan_in_mult: float) -> tuple[float, float, float, float]:
    """(init_scale, multiplier, lr_sgd, lr_adam) for one parameter."""
    if role == "fixed":
        init = module_fan_in_mult ** 0.5 if (scheme.rescale_init and default_fan_in) else 1.0
        return init, 1.0, 1.0, 1.0
    row = scheme.row(role)
    n = m_out if role in ("input", "vector") else m_in
    init = 1.0
    if scheme.rescale_init:
        default = (module_fan_in_mult if role == "vector" else m_in) ** -0.5 if default_fan_in else 1.0
        init = n ** -row.b / default
    lr_sgd = n ** -row.c_sgd * (m_out ** row.sgd_fan_out if role == "hidden" else 1.0)
    return init, n ** -row.a, lr_sgd, n ** -row.c_adam


def parametrize(
    model: nn.Module,
    base: nn.Module | dict[str, Iterable[int]] | None = None,
    scheme: str | ABC = "mup",
    *,
    delta: nn.Module | dict[str, Iterable[int]] | None = None,
    readout_zero_init: bool = False,
    depth: int | None = None,
    base_depth: int | None = None,
    residual_branches: Sequence[str] = (),
) -> nn.Module:
    """Parametrize ``model`` in place (and return it).

    Args:
        model: the (wide) model, freshly initialised with PyTorch defaults.
        base: a narrow model of the same architecture (or a dict of parameter
            shapes); dimensions that differ from ``model`` are widths.  ``None``
            means ``model`` itself (every width multiplier is 1).
        scheme: ``"sp"``, ``"ntk"``, ``"mup"``, ``"mf"`` or a custom
            :func:`~widelimit.parametrization.abc.abc` scheme (Yang & Hu 2021).
        delta: optional third model differing from ``base`` exactly in the
            width dimensions (needed when the model's width equals the base's
            in some dimension you still want to treat as a width).
        readout_zero_init: zero the output layer(s) (Tensor Programs V, Sec. D.2
            recommends this for muP).
        depth, base_depth, residual_branches: depth-muP (Bordelon et al. 2023,
            "Depthwise Hyperparameter Transfer in Residual Networks"; Yang et
            al. 2023, "Tensor Programs VI"): for the residual network
            ``h^l = h^(l-1) + sqrt(L0 / L) * branch_l(h^(l-1))`` multiply the
            outputs of the named branch modules by ``sqrt(base_depth / depth)``
            and, for Adam-like optimisers, the learning rate of every
            parameter inside a branch by the same factor (TP VI, Depth-muP:
            an entrywise-normalised update of size ``eta`` moves each branch
            by ``eta / sqrt(L)``, and ``L`` aligned branch updates add up to
            ``eta sqrt(L)``; SGD's gradients already carry the branch
            multiplier, so its learning rate stays depth independent).

    Raises:
        RuntimeError: the model is already parametrized.
        ValueError: base/delta do not match the model (see
            :func:`~widelimit.parametrization.registry.infer_dims`), or the
            scheme needs a multiplier on a parameter that is not the weight of
            a linear or convolutional layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"parametrize expects an nn.Module, got {type(model).__name__}")
    if is_parametrized(model):
        raise RuntimeError(
            "model is already parametrized (parametrize rescales the initialisation, so a "
            "second call would scale it twice); build a fresh model, or to resume from a "
            "checkpoint parametrize a fresh model and then call load_state_dict"
        )
    sch = get_scheme(scheme)
    branches = _check_depth_args(model, depth, base_depth, residual_branches)
    dims = infer_dims(model, model if base is None else base, delta)
    owners = owner_modules(model)
    reg = Registry(scheme=sch)
    infos: dict[str, tuple[ParamInfo, nn.Module, str]] = {}
    for name, (shape, bshape, inf) in dims.items():
        _, mod, local = owners[name]
        role, m_in, m_out = classify(mod, local, shape, bshape, inf)
        infos[name] = (ParamInfo(name, shape, bshape, inf, role, m_in, m_out), mod, local)
    # fan-in multiplier of each module's weight (for its bias's default init)
    weight_mult = {id(mod): info.fan_in_mult for info, mod, local in infos.values() if local == "weight"}
    multipliers: list[tuple[nn.Module, float]] = []
    for name, (info, mod, local) in infos.items():
        ndim = len(info.shape)
        init, mult, lr_s, lr_a = _factors(
            sch, info.role, info.fan_in_mult, info.fan_out_mult,
            default_init_fan_in_exponent(mod, local, ndim), weight_mult.get(id(mod), 1.0),
        )
        info.init_scale, info.multiplier, info.lr_sgd, info.lr_adam = init, mult, lr_s, lr_a
        if abs(mult - 1.0) > 1e-12:
            if not (local == "weight" and isinstance(mod, (nn.Linear, _ConvNd))):
                raise ValueError(
                    f"scheme {sch.name!r} needs a multiplier {mult:.4g} on {name!r} "
                    f"({type(mod).__name__}.{local}), but multipliers are only supported on "
                    "weights of nn.Linear / nn.ConvNd; use an equivalent scheme via the abc "
                    "symmetry (a+t, b-t, c-2t), which moves the multiplier into init and lr"
                )
            multipliers.append((mod, mult))
        reg.params[name] = info
    zero_mods = _readout_modules(infos, readout_zero_init)
    if readout_zero_init and not zero_mods:
        raise ValueError(
            "readout_zero_init=True but no output layer (width fan-in, finite fan-out) was found: "
            "the model has no width dimensions relative to base; pass delta= (a model of "
            "another width) so the width dimensions are known, or use widelimit.Readout("
            "..., readout_zero_init=True)"
        )
    with torch.no_grad():
        for name, p in model.named_parameters():
            info = reg.params[name]
            if info.init_scale != 1.0:
                p.mul_(info.init_scale)
            if any(owners[name][1] is m for m in zero_mods):
                p.zero_()
    for mod, mult in multipliers:
        mod.register_forward_pre_hook(_InputScale(mult))
    if residual_branches:
        reg.branch_multiplier = (base_depth / depth) ** 0.5  # type: ignore[operator]
        for bname in residual_branches:
            branches[bname].register_forward_hook(_OutputScale(reg.branch_multiplier))
        reg.residual_branches = tuple(residual_branches)
        for name in _branch_params(model, branches):
            reg.params[name].lr_adam *= reg.branch_multiplier
    setattr(model, REGISTRY_ATTR, reg)
    index(model)
    return model


def _check_depth_args(model: nn.Module, depth: int | None, base_depth: int | None,
                      residual_branches: Sequence[str]) -> dict[str, nn.Module]:
    """Validate the depth-scaling arguments before anything is modified."""
    if isinstance(residual_branches, str):
        raise TypeError("residual_branches must be a list of module names, not a string")
    if not residual_branches:
        if depth is not None or base_depth is not None:
            raise ValueError("depth scaling needs residual_branches=[names of the branch modules]")
        return {}
    if depth is None or base_depth is None:
        raise ValueError("residual_branches needs depth= and base_depth= (numbers of blocks)")
    if base_depth <= 0 or depth < base_depth:
        raise ValueError(f"need 0 < base_depth <= depth, got depth={depth}, base_depth={base_depth}; "
                         "use the shallow model's depth as base_depth")
    mods = dict(model.named_modules())
    missing = [b for b in residual_branches if b not in mods]
    if missing:
        raise ValueError(f"residual branches {missing} are not submodule names of the model "
                         "(see model.named_modules())")
    return {b: mods[b] for b in residual_branches}


def _branch_params(model: nn.Module, branches: dict[str, nn.Module]) -> list[str]:
    """Names of the parameters owned by (submodules of) the residual branches."""
    ids = {id(p) for m in branches.values() for p in m.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def _readout_modules(infos: dict, zero_all_outputs: bool) -> list[nn.Module]:
    """Modules to zero-initialise: output layers if requested, and
    :class:`~widelimit.parametrization.readout.Readout` layers built with
    ``readout_zero_init=True``."""
    from widelimit.parametrization.readout import Readout

    out: list[nn.Module] = []
    for info, mod, local in infos.values():
        if (zero_all_outputs and local == "weight" and info.role == "output") or (
            isinstance(mod, Readout) and mod.readout_zero_init
        ):
            if not any(m is mod for m in out):
                out.append(mod)
    return out


def is_parametrized(model: nn.Module) -> bool:
    """Whether :func:`parametrize` has been called on ``model``."""
    return isinstance(getattr(model, REGISTRY_ATTR, None), Registry)


def get_registry(model: nn.Module) -> Registry:
    """The :class:`Registry` of a parametrized model."""
    reg = getattr(model, REGISTRY_ATTR, None)
    if not isinstance(reg, Registry):
        raise RuntimeError(
            "model has not been parametrized; call widelimit.parametrize(model, base=..., scheme=...) first"
        )
    return reg


def index(model: nn.Module) -> None:
    """(Re)build the parameter -> registry index, e.g. after ``torch.load``."""
    reg = get_registry(model)
    for name, p in model.named_parameters():
        if name not in reg:
            raise RuntimeError(
                f"parameter {name!r} was added after parametrize(); parametrize the model "
                "only once its architecture is final"
            )
        _INDEX[p] = (reg, name)


def lookup(p: torch.Tensor) -> tuple[Registry, str] | None:
    """Registry and name of a parametrized parameter, or ``None``."""
    return _INDEX.get(p)
