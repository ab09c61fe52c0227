"""Coordinate checks (Tensor Programs V, Sec. D.1 / Fig. 5; Yang & Hu 2021).

Train models of increasing width for a few steps and record, for every layer,
the average size of its output coordinates (``mean |h|``) and of their change
since initialisation (``mean |h_t - h_0|``).  In a correct muP every such
curve is flat in width (log-log slope ~ 0); in SP with a width-independent
learning rate they blow up (slope > 0); in the NTK parametrization the
feature updates vanish like ``n^{-1/2}``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from widelimit.parametrization.abc import ABC
from widelimit._validate import check_int, check_real
from widelimit.parametrization.optim import optimizer_kind, param_groups
from widelimit.parametrization.parametrize import get_registry, parametrize

__all__ = ["CoordCheckReport", "coord_check"]


@dataclass
class CoordCheckReport:
    """Result of :func:`coord_check`.

    Attributes:
        widths: the widths trained.
        act: layer name -> array ``(len(widths), steps + 1)`` of ``mean |h_t|``.
        delta: layer name -> same shape, ``mean |h_t - h_0|``.
        layer_types: layer name -> panel label (``"input"``, ``"hidden"``,
            ``"output"`` or the module class name).
        scheme: name of the parametrization.
    """

    widths: list[int]
    act: dict[str, np.ndarray]
    delta: dict[str, np.ndarray]
    layer_types: dict[str, str]
    scheme: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Number of optimisation steps recorded (curves have ``steps + 1`` points)."""
        return next(iter(self.act.values())).shape[1] - 1

    def _table(self, kind: str) -> dict[str, np.ndarray]:
        if kind not in ("act", "delta"):
            raise ValueError(f"kind must be 'act' or 'delta', got {kind!r}")
        return self.act if kind == "act" else self.delta

    def slopes(self, step: int = -1, kind: str = "act") -> dict[str, float]:
        """Least-squares slope of ``log(size)`` against ``log(width)`` per layer.

        Args:
            step: which step (``-1``: the last).
            kind: ``"act"`` (activation size) or ``"delta"`` (feature update size).
        """
        x = np.log(np.asarray(self.widths, dtype=float))
        out: dict[str, float] = {}
        for name, arr in self._table(kind).items():
            y = arr[:, step]
            out[name] = float(np.polyfit(x, np.log(y), 1)[0]) if np.all(y > 0) else float("nan")
        return out

    def plot(self, path: str | None = None, kind: str = "act") -> Any:
        """One panel per layer type: size vs width (log-log), one line per step.

        Layers of one type are averaged inside the panel.  Returns the figure;
        saves it to ``path`` if given.  Needs matplotlib.
        """
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        table = self._table(kind)
        types = sorted(set(self.layer_types.values()), key=_type_order)
        fig, axes = plt.subplots(1, len(types), figsize=(3.6 * len(types), 3.2), squeeze=False)
        colors = plt.cm.viridis(np.linspace(0, 0.9, self.steps + 1))
        for ax, t in zip(axes[0], types):
            arr = np.mean([table[n] for n, lt in self.layer_types.items() if lt == t], axis=0)
            for s in range(self.steps + 1):
                if kind == "delta" and s == 0:
                    continue
                ax.plot(self.widths, arr[:, s], "o-", color=colors[s], label=f"step {s}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{t} ({self.scheme})")
            ax.set_xlabel(self.meta.get("axis", "width"))
        axes[0][0].set_ylabel("mean |h|" if kind == "act" else "mean |h_t - h_0|")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100)
            plt.close(fig)
        return fig


def _type_order(t: str) -> tuple[int, str]:
    return ({"input": 0, "hidden": 1, "branch": 2, "stream": 3, "output": 4}.get(t, 5), t)


def _batches(data: Any) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return itertools.repeat((data[0], data[1]))
    if isinstance(data, torch.Tensor) or not hasattr(data, "__iter__"):
        raise TypeError(f"`data` must be an (x, y) pair of tensors or an iterable of such batches, "
                        f"got {type(data).__name__}.")
    batches = list(data)
    if not batches or not all(isinstance(b, (tuple, list)) and len(b) == 2 for b in batches):
        raise ValueError("`data` must be an (x, y) pair of tensors or a non-empty iterable of "
                         "(x, y) batches.")
    return itertools.cycle(batches)


def _check_widths(widths: Any, name: str = "widths") -> list[int]:
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
        raise TypeError(f"`{name}` must be a sequence of integers, got {widths!r}.")
    out = [check_int(f"{name}[{i}]", w, min=1) for i, w in enumerate(widths)]
    if len(out) < 2 or any(a >= b for a, b in zip(out, out[1:])):
        raise ValueError(f"`{name}` must be at least two strictly increasing {name}, got {out}.")
    return out


def _check_data(model: nn.Module, x: Any, width: int) -> None:
    """The model's own error on the probe batch, re-raised naming ``data``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`data` must be an (x, y) pair of tensors or an iterable of such batches; "
                        f"its first x is {type(x).__name__}.")
    try:
        with torch.no_grad():
            model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise ValueError(f"`data`: make_model({width}) cannot be applied to x of shape "
                         f"{tuple(x.shape)}: {e}") from e


def _default_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y.dtype in (torch.long, torch.int32, torch.int64):
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return F.mse_loss(out, y)


def _keeps_global_rng(fn: Callable) -> Callable:
    """Run ``fn`` with its own seeds and restore torch's global (CPU) RNG state afterwards."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # CUDA generators too once CUDA is in use (forking them never initialises CUDA)
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda):
            return fn(*args, **kwargs)
    return wrapper


@_keeps_global_rng
def coord_check(
    make_model: Callable[[int], nn.Module],
    widths: Sequence[int],
    data: Any,
    steps: int = 5,
    scheme: str | ABC = "mup",
    *,
    lr: float = 1e-2,
    optimizer: str | type = "adam",
    base_width: int | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    seeds: int = 1,
    readout_zero_init: bool = False,
    modules: Sequence[str] | None = None,
) -> CoordCheckReport:
    """Coordinate check of ``make_model(width)`` under ``scheme``.

    Args:
        make_model: builds a freshly initialised model of the given width.
        widths: increasing widths; ``base_width`` defaults to ``widths[0]``.
        data: an ``(x, y)`` pair of tensors (reused every step) or an iterable
            of batches; the first batch is also the probe on which sizes are
            measured.
        steps: optimisation steps.
        scheme: parametrization (see :func:`~widelimit.parametrize`).
        lr, optimizer: base learning rate and ``"sgd"``/``"adam"``/an
            optimiser class; per-layer learning rates come from
            :func:`~widelimit.param_groups`.
        loss_fn: defaults to cross-entropy for integer targets, MSE otherwise.
        seeds: number of seeds averaged.
        modules: names of the modules to record (default: every leaf module
            with parameters).
    """
    widths = _check_widths(widths)
    steps = check_int("steps", steps, min=1)
    seeds = check_int("seeds", seeds, min=1)
    check_real("lr", lr, min=0.0, open_min=True)
    optimizer_kind(optimizer)
    check_int("base_width", base_width, min=1, allow_none=True)
    if not callable(make_model):
        raise TypeError(f"`make_model` must be a callable width -> nn.Module, got {make_model!r}.")
    loss_fn = loss_fn or _default_loss
    opt_cls: type = optimizer if isinstance(optimizer, type) else (
        torch.optim.SGD if str(optimizer).lower() == "sgd" else torch.optim.Adam)
    bw = widths[0] if base_width is None else int(base_width)
    act: dict[str, np.ndarray] = {}
    delta: dict[str, np.ndarray] = {}
    types: dict[str, str] = {}
    for wi, width in enumerate(widths):
        for seed in range(seeds):
            torch.manual_seed(10_000 + seed)
            base = make_model(bw)
            delta_model = make_model(widths[1] if widths[1] != bw else widths[-1])
            torch.manual_seed(seed)
            if not isinstance(base, nn.Module):
                raise TypeError(f"`make_model` must return a torch.nn.Module, got {type(base).__name__}.")
            model = parametrize(make_model(width), base=base, scheme=scheme, delta=delta_model,
                                readout_zero_init=readout_zero_init)
            reg = get_registry(model)
            names = list(modules) if modules is not None else [
                n for n, m in model.named_modules()
                if not list(m.children()) and list(m.parameters(recurse=False))
            ]
            mods = dict(model.named_modules())
            missing = [n for n in names if n not in mods]
            if missing:
                raise ValueError(f"modules {missing} are not submodules of the model")
            if wi == len(widths) - 1 and seed == 0:
                for n in names:
                    role = reg.params[f"{n}.weight"].role if f"{n}.weight" in reg else ""
                    types[n] = role if role in ("input", "hidden", "output") else type(mods[n]).__name__
            opt = opt_cls(param_groups(model, lr, optimizer if isinstance(optimizer, type) else str(optimizer)), lr=lr)
            batches = _batches(data)
            probe_x = next(iter(_batches(data)))[0]
            _check_data(model, probe_x, width)
            captured: dict[str, torch.Tensor] = {}
            handles = [mods[n].register_forward_hook(_capture(n, captured)) for n in names]
            first: dict[str, torch.Tensor] = {}
            for t in range(steps + 1):
                model.eval()
                with torch.no_grad():
                    model(probe_x)
                for n in names:
                    h = captured[n]
                    if t == 0:
                        first[n] = h
                        for tab in (act, delta):
                            tab.setdefault(n, np.zeros((len(widths), steps + 1)))
                    act[n][wi, t] += h.abs().mean().item() / seeds
                    delta[n][wi, t] += (h - first[n]).abs().mean().item() / seeds
                if t == steps:
                    break
                model.train()
                x, y = next(batches)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
            for h in handles:
                h.remove()
    name = scheme if isinstance(scheme, str) else scheme.name
    return CoordCheckReport(widths, act, delta, types, name, {"lr": lr, "optimizer": str(optimizer), "steps": steps})


def _capture(name: str, store: dict[str, torch.Tensor]) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        store[name] = out.detach().float().clone()
    return hook
