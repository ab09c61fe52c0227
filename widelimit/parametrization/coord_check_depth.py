"""Coordinate checks over depth (Bordelon et al. 2023; Yang et al. 2023, TP VI).

Train residual networks ``h^l = h^(l-1) + m_L * branch_l(h^(l-1))`` of
increasing depth ``L`` for a few steps and record the average size of the
residual stream that reaches the readout (``mean |h^L|``), of the branch
outputs and of the network output, together with their change since
initialisation (``mean |h_t - h_0|``).  Under depth-muP (``m_L =
sqrt(L0 / L)``, Adam learning rates inside the branches times
``sqrt(L0 / L)``) the stream and output curves are flat in depth (log-log
slope ~ 0); in the standard parametrization (``m_L = 1``, no learning-rate
scaling) they grow with depth.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from widelimit._validate import check_int, check_real
from widelimit.parametrization.coord_check import (
    CoordCheckReport,
    _batches,
    _capture,
    _check_data,
    _check_widths,
    _default_loss,
    _keeps_global_rng,
)
from widelimit.parametrization.optim import optimizer_kind, param_groups
from widelimit.parametrization.parametrize import parametrize

__all__ = ["DepthCoordCheckReport", "coord_check_depth"]

DEPTH_SCHEMES = ("depth-mup", "sp")


@dataclass
class DepthCoordCheckReport(CoordCheckReport):
    """Result of :func:`coord_check_depth`.

    As :class:`~widelimit.parametrization.CoordCheckReport` with the depths in
    place of the widths (``slopes`` are against ``log(depth)``); the layers
    are ``"stream"`` (input of the readout), ``"branch"`` (branch outputs
    after the multiplier, averaged over the blocks) and ``"output"``.
    """

    @property
    def depths(self) -> list[int]:
        """The depths (numbers of residual blocks) trained."""
        return self.widths


def _record(store: dict[str, torch.Tensor], branch_out: dict[str, torch.Tensor],
            bnames: Sequence[str], out: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"stream": store["stream"], "output": out.detach().float(),
            "branch": torch.stack([branch_out[b] for b in bnames])}


@_keeps_global_rng
def coord_check_depth(
    make_model: Callable[[int], nn.Module],
    depths: Sequence[int],
    data: Any,
    steps: int = 5,
    scheme: str = "depth-mup",
    *,
    residual_branches: Callable[[int], Sequence[str]],
    readout: str | None = None,
    lr: float = 1e-2,
    optimizer: str | type = "adam",
    base_depth: int | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    seeds: int = 1,
) -> DepthCoordCheckReport:
    """Coordinate check of ``make_model(depth)`` over depth.

    Args:
        make_model: builds a freshly initialised residual network with
            ``depth`` blocks (one width; width multipliers are all 1).
        depths: increasing depths; ``base_depth`` defaults to ``depths[0]``.
        data: an ``(x, y)`` pair of tensors (reused every step) or an iterable
            of batches; the first batch is the probe on which sizes are measured.
        steps: optimisation steps.
        scheme: ``"depth-mup"`` (branches times ``sqrt(base_depth / depth)``
            and Adam learning rates inside them times the same factor, see
            :func:`~widelimit.parametrize`) or ``"sp"`` (no depth scaling).
        residual_branches: ``depth -> names`` of the branch modules of
            ``make_model(depth)`` (``model.named_modules()`` names).
        readout: name of the module whose input is the residual stream
            (default: the last leaf module with parameters).
        lr, optimizer: base learning rate and ``"sgd"``/``"adam"``/an
            optimiser class (per-parameter rates from :func:`~widelimit.param_groups`).
        loss_fn: defaults to cross-entropy for integer targets, MSE otherwise.
        seeds: number of seeds averaged.
    """
    depths = _check_widths(depths, "depths")
    steps = check_int("steps", steps, min=1)
    seeds = check_int("seeds", seeds, min=1)
    check_real("lr", lr, min=0.0, open_min=True)
    kind = optimizer_kind(optimizer)
    check_int("base_depth", base_depth, min=1, allow_none=True)
    if not isinstance(scheme, str) or scheme not in DEPTH_SCHEMES:
        raise ValueError(f"`scheme` must be one of {DEPTH_SCHEMES}, got {scheme!r}.")
    for name, fn in (("make_model", make_model), ("residual_branches", residual_branches)):
        if not callable(fn):
            raise TypeError(f"`{name}` must be a callable depth -> ..., got {fn!r}.")
    bd = depths[0] if base_depth is None else int(base_depth)
    if bd > depths[0]:
        raise ValueError(f"`base_depth` ({bd}) must not exceed the smallest depth ({depths[0]}).")
    loss_fn = loss_fn or _default_loss
    opt_cls: type = optimizer if isinstance(optimizer, type) else (
        torch.optim.SGD if kind == "sgd" else torch.optim.Adam)
    layers = ("stream", "branch", "output")
    act = {n: np.zeros((len(depths), steps + 1)) for n in layers}
    delta = {n: np.zeros((len(depths), steps + 1)) for n in layers}
    for di, depth in enumerate(depths):
        for seed in range(seeds):
            torch.manual_seed(seed)
            model = make_model(depth)
            if not isinstance(model, nn.Module):
                raise TypeError(f"`make_model` must return a torch.nn.Module, got {type(model).__name__}.")
            bnames = list(residual_branches(depth))
            if not bnames:
                raise ValueError(f"`residual_branches({depth})` named no modules.")
            if scheme == "depth-mup":
                parametrize(model, scheme="sp", depth=depth, base_depth=bd, residual_branches=bnames)
            else:
                parametrize(model, scheme="sp")
            mods = dict(model.named_modules())
            missing = [b for b in bnames + ([readout] if readout else []) if b not in mods]
            if missing:
                raise ValueError(f"modules {missing} are not submodules of make_model({depth})")
            ro = readout or [n for n, m in model.named_modules()
                             if not list(m.children()) and list(m.parameters(recurse=False))][-1]
            store: dict[str, torch.Tensor] = {}
            branch_out: dict[str, torch.Tensor] = {}
            handles = [mods[ro].register_forward_pre_hook(
                lambda m, a: store.__setitem__("stream", a[0].detach().float().clone()))]
            handles += [mods[b].register_forward_hook(_capture(b, branch_out)) for b in bnames]
            opt = opt_cls(param_groups(model, lr, optimizer if isinstance(optimizer, type) else kind), lr=lr)
            batches = _batches(data)
            probe_x = next(iter(_batches(data)))[0]
            _check_data(model, probe_x, depth)
            first: dict[str, torch.Tensor] = {}
            for t in range(steps + 1):
                model.eval()
                with torch.no_grad():
                    rec = _record(store, branch_out, bnames, model(probe_x))
                for n in layers:
                    first.setdefault(n, rec[n])
                    act[n][di, t] += rec[n].abs().mean().item() / seeds
                    delta[n][di, t] += (rec[n] - first[n]).abs().mean().item() / seeds
                if t == steps:
                    break
                model.train()
                x, y = next(batches)
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()
            for h in handles:
                h.remove()
    return DepthCoordCheckReport(
        depths, act, delta, {n: n for n in layers}, scheme,
        {"lr": lr, "optimizer": str(optimizer), "steps": steps, "axis": "depth", "base_depth": bd})
