"""Monte Carlo estimates of NNGP and NTK kernels from real finite networks.

Draws ``n_samples`` independently initialised finite networks from the same
architecture description used by the analytic kernels (``net.module()``) and
averages their empirical kernels:

    NNGP_hat(x1, x2) = mean_s  f_s(x1) . f_s(x2) / n_out
    NTK_hat(x1, x2)  = mean_s  J_s(x1) . J_s(x2)^T / n_out      (J: parameter Jacobian)

The empirical kernels come from :mod:`widelimit.empirical` (no second copy here).
Each entry's Monte Carlo error shrinks like 1/sqrt(width x n_samples); the
per-sample kernels (``return_samples=True``) give its standard error.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from widelimit._tensors import kernels_tuple, to_output
from widelimit._validate import check_int
from widelimit.empirical import empirical_nngp, empirical_ntk
from widelimit.layers.base import Get, Layer, canonical_get, prepare_masked_inputs


def monte_carlo_kernel_fn(net: Layer, n_samples: int, width: Optional[int] = None, seed: int = 0, *,
                          implementation: str = "auto", trace_axes: Sequence[int] = (-1,),
                          device: Any = None) -> Callable:
    """Return ``kernel_fn(x1, x2=None, get=("nngp", "ntk"), return_samples=False,
    mask_constant=None, mask=None)`` (masks as ``Layer.kernel_fn``).

    Args:
        net: a widelimit architecture (``widelimit.layers``).
        n_samples: number of independently initialised networks.
        width: if given, every hidden width is set to it (the readout keeps its size).
        seed: network ``s`` is initialised with ``torch.manual_seed(seed + s)``.
        implementation: empirical-NTK implementation (see ``widelimit.empirical``).
        trace_axes: output axes averaged over (neural-tangents convention).
    """
    if not isinstance(net, Layer):
        raise TypeError(f"`net` must be a widelimit layer (e.g. widelimit.layers.serial(...)), "
                        f"got {type(net).__name__}.")
    check_int("n_samples", n_samples, min=1)
    check_int("seed", seed)
    arch = net if width is None else net.with_width(width)

    def kernel_fn(x1: Any, x2: Any = None, get: Get = ("nngp", "ntk"), *,
                  return_samples: bool = False, mask_constant: Optional[float] = None,
                  mask: Any = None):
        names = canonical_get(get)
        if names is None:
            raise ValueError("`get` must name 'nngp' and/or 'ntk' for Monte Carlo kernels.")
        t1, t2, m1, m2, was_numpy = prepare_masked_inputs(x1, x2, mask, mask_constant)
        fwd = {}
        if m1 is not None or m2 is not None:
            # masked positions travel as NaN through the empirical-kernel blocks; the finite
            # network reads them back with mask_constant=NaN (widelimit.layers.masking)
            t1, t2 = _nan_at(t1, m1), None if t2 is None else _nan_at(t2, m2)
            fwd = {"mask_constant": float("nan")}
        if device is not None:
            t1 = t1.to(device)
            t2 = None if t2 is None else t2.to(device)
        samples: dict[str, list[Tensor]] = {n: [] for n in names}
        for s in range(n_samples):
            model = arch.module(input_shape=tuple(t1.shape[1:]), dtype=t1.dtype, device=t1.device,
                                seed=seed + s)
            if "nngp" in samples:
                samples["nngp"].append(empirical_nngp(model, t1, t2, trace_axes=trace_axes,
                                                      **fwd).detach())
            if "ntk" in samples:
                samples["ntk"].append(empirical_ntk(model, t1, t2, trace_axes=trace_axes,
                                                    implementation=implementation, **fwd).detach())
        stacked = {n: torch.stack(v) for n, v in samples.items()}
        values = {n: (v if return_samples else v.mean(0)) for n, v in stacked.items()}
        if isinstance(get, str):
            return to_output(values[get], was_numpy)
        return to_output(kernels_tuple(tuple(names))(*(values[n] for n in names)), was_numpy)

    return kernel_fn


def _nan_at(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    return x if mask is None else x.masked_fill(mask.unsqueeze(1), float("nan"))


__all__ = ["monte_carlo_kernel_fn"]
