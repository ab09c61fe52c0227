"""Optional fusion of the elementwise kernel rules with ``torch.compile``.

A nonlinearity's rule is a dozen elementwise passes over an (N1, N2) matrix; eagerly
each pass reads and writes the whole matrix, so for large kernels it costs several
times the Gram matrix itself.  Compiled (TorchInductor), the dual, its derivative
and the NTK product fuse into one loop.

Modes (``set_compile`` or the environment variable ``WIDELIMIT_COMPILE``):
``"auto"`` (default) compiles only kernels with at least ``THRESHOLD`` entries that
need no gradient, so small and differentiable computations never pay the one-off
compile time (seconds, cached on disk by PyTorch afterwards); ``"on"`` always;
``"off"`` never.  If compilation fails (e.g. no C++ compiler), widelimit warns once
and stays eager.

Since large kernels are computed in cache-sized blocks (vector inputs: tiles of at most
512 x 512 entries, :func:`widelimit.scale.blocking.vector_plan`; images: blocks of about
2^19 entries), ``"auto"`` rarely meets a tensor of ``THRESHOLD`` entries: eager passes
over a block in cache were measured faster than one compiled pass streaming the whole
matrix (FC depth 3, N = 4000: 0.38 s vs 0.59 s), and they need no compile time.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable

import torch

THRESHOLD = 1 << 20
_MODES = ("auto", "on", "off")
_state = {"mode": os.environ.get("WIDELIMIT_COMPILE", "auto").lower(), "failed": False,
          "suspended": 0}
_cache: dict[Callable, Callable] = {}


def set_compile(mode: str) -> None:
    """Choose when elementwise kernel rules are compiled: "auto", "on" or "off"."""
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}, got {mode!r}.")
    _state["mode"] = mode


def get_compile() -> str:
    return _state["mode"]


def suspend(on: bool) -> None:
    """Nestable: no compilation between ``suspend(True)`` and ``suspend(False)`` (used by the
    memory probes of :mod:`widelimit.scale.memory`, which measure eager operations)."""
    _state["suspended"] += 1 if on else -1


def will_compile(*tensors) -> bool:
    """Whether :func:`run` would compile for these arguments."""
    mode = _state["mode"]
    if _state["failed"] or mode == "off" or _state["suspended"] > 0:
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return False
    return mode == "on" or max(t.numel() for t in tensors if t is not None) >= THRESHOLD


def run(fn: Callable, *tensors):
    """``fn(*tensors)``, compiled when the mode and the sizes say it pays off."""
    if not will_compile(*tensors):
        return fn(*tensors)
    compiled = _cache.get(fn)
    if compiled is None:
        compiled = _cache[fn] = torch.compile(fn, dynamic=True)
    try:
        return compiled(*tensors)
    except Exception as e:  # pragma: no cover - depends on the toolchain
        _state["failed"] = True
        warnings.warn(f"widelimit: torch.compile failed ({type(e).__name__}: {e}); kernels stay eager. "
                      "Set WIDELIMIT_COMPILE=off to silence this.", RuntimeWarning, stacklevel=2)
        return fn(*tensors)
