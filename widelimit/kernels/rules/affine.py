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

from torch import Tensor

from widelimit.kernels.state import Kernel


def affine(mat: Optional[Tensor], W_std, b_std) -> Optional[Tensor]:
    if mat is None:
        return None
    out = mat * (W_std * W_std)
    if b_std is not None:
        out = out.add_(b_std * b_std) if not isinstance(b_std, Tensor) else out + b_std * b_std
    return out


def dense_pair(nngp: Tensor, ntk: Optional[Tensor], w2, b2, input_width, ntk_param: bool,
               bias: bool) -> tuple[Tensor, Optional[Tensor]]:
    """The (nngp, ntk) update of a Dense layer; ``w2 = W_std^2``, ``b2 = b_std^2`` (0 without bias)."""
    new = nngp * w2 + b2
    if ntk is None:
        return new, None
    if ntk_param:
        return new, new + w2 * ntk
    out = input_width * nngp + w2 * ntk
    return new, (out + 1.0 if bias else out)


def dense_coefficients(w2: float, b2: float, input_width: float, ntk_param: bool,
                       bias: bool) -> tuple[float, float, float, float, float]:
    """:func:`dense_pair` as ``(alpha, beta, gamma, delta, eps)``: nngp' = alpha nngp + beta,
    ntk' = gamma nngp + delta ntk + eps (for loops that fuse it into the next layer)."""
    if ntk_param:
        return w2, b2, w2, w2, b2
    return w2, b2, input_width, w2, 1.0 if bias else 0.0


def dense_rule(k: Kernel, W_std, b_std, parameterization: str, input_width: float,
               out_shape1: tuple, out_shape2: tuple, pair: bool = True) -> Kernel:
    """Kernel after a random affine layer; ``input_width`` = n / s0 (standard only).

    With ``pair=False`` only the variances, shapes and flags are updated (a fused
    rule computes nngp and ntk itself, with :func:`dense_pair`).
    """
    nngp, ntk = k.nngp, k.ntk
    if pair:
        nngp, ntk = dense_pair(k.nngp, k.ntk, W_std * W_std, 0.0 if b_std is None else b_std * b_std,
                               input_width, parameterization == "ntk", b_std is not None)
    return k.replace(nngp=nngp, ntk=ntk, cov1=affine(k.cov1, W_std, b_std),
                     cov2=affine(k.cov2, W_std, b_std), is_gaussian=True, is_input=False,
                     shape1=out_shape1, shape2=out_shape2)


__all__ = ["affine", "dense_coefficients", "dense_pair", "dense_rule"]
