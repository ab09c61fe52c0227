"""Random affine layers (Dense) in the NTK and the standard parametrization.

Covariance of z = W x + b with W_ij ~ N(0, W_std^2 / n), b ~ N(0, b_std^2):
    nngp' = W_std^2 nngp + b_std^2                      (Neal 1996; Lee et al. 2018)
NTK parametrization (Jacot et al. 2018), z = W_std/sqrt(n) W x + b_std b:
    ntk'  = nngp' + W_std^2 ntk
Standard parametrization (Sohl-Dickstein et al. 2020, "On the infinite width
limit of neural networks with a standard parameterization"), input width n / s0:
    ntk'  = (n / s0) nngp + W_std^2 ntk + [1 if there is a bias]
The same affine map acts on cov1/cov2 and on every spatial entry, so convolution
rules reuse :func:`affine`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from widelimit.kernels.state import Kernel


def affine(mat: Optional[Tensor], W_std, b_std) -> Optional[Tensor]:
    if mat is None:
        return None
    out = mat * (W_std * W_std)
    if b_std is not None:
        out = out.add_(b_std * b_std) if not isinstance(b_std, Tensor) else out + b_std * b_std
    return out


def dense_rule(k: Kernel, W_std, b_std, parameterization: str, input_width: float,
               out_shape1: tuple, out_shape2: tuple) -> Kernel:
    """Kernel after a random affine layer; ``input_width`` = n / s0 (standard only)."""
    nngp = affine(k.nngp, W_std, b_std)
    ntk = k.ntk
    if ntk is not None:
        if parameterization == "ntk":
            ntk = (torch.add(nngp, ntk, alpha=W_std * W_std) if not isinstance(W_std, Tensor)
                   and ntk.shape == nngp.shape else nngp + (W_std * W_std) * ntk)
        else:
            ntk = input_width * k.nngp + (W_std * W_std) * ntk
            if b_std is not None:
                ntk = ntk + 1.0
    return k.replace(nngp=nngp, ntk=ntk, cov1=affine(k.cov1, W_std, b_std),
                     cov2=affine(k.cov2, W_std, b_std), is_gaussian=True, is_input=False,
                     shape1=out_shape1, shape2=out_shape2)


__all__ = ["affine", "dense_rule"]
