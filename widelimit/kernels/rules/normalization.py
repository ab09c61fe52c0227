"""LayerNorm and Dropout.

LayerNorm over the (infinite) channel axis of centred Gaussian pre-activations
divides each covariance by the square roots of the two variances (the channel
mean tends to 0):   nngp' = nngp / sqrt((eps + v1)(eps + v2)),  same for ntk.

Dropout with keep probability ``rate`` (neural-tangents' convention) in train
mode multiplies the variance of each input by 1/rate (masks are independent
across inputs, so off-diagonal covariances are unchanged); the output is no
longer Gaussian.
"""
from __future__ import annotations

import torch

from widelimit.kernels.state import Kernel, pair_variances, self_variances


def layer_norm_rule(k: Kernel, eps: float) -> Kernel:
    if not k.is_gaussian:
        raise ValueError("LayerNorm's infinite-width rule needs Gaussian (centred) inputs: put a "
                         "Dense or Conv layer before it.")
    v1, v2 = pair_variances(k)
    norm = torch.sqrt((eps + v1) * (eps + v2))
    va, vb = self_variances(k, k.cov1)
    cov1 = k.cov1 / torch.sqrt((eps + va) * (eps + vb))
    cov2 = None
    if k.cov2 is not None:
        wa, wb = self_variances(k, k.cov2)
        cov2 = k.cov2 / torch.sqrt((eps + wa) * (eps + wb))
    return k.replace(nngp=k.nngp / norm, ntk=None if k.ntk is None else k.ntk / norm,
                     cov1=cov1, cov2=cov2)


def _scale_diagonal(mat: torch.Tensor, factor: float) -> torch.Tensor:
    """Multiply the entries that pair an example with itself by ``factor``."""
    eye = torch.eye(mat.shape[0], mat.shape[1], dtype=mat.dtype, device=mat.device)
    eye = eye.reshape(eye.shape + (1,) * (mat.ndim - 2))
    return mat * (1 + (factor - 1) * eye)


def dropout_rule(k: Kernel, rate: float) -> Kernel:
    if k.is_input:
        raise ValueError("Dropout cannot be applied to the network input: put it after a layer.")
    if k.n_spatial and not k.diagonal_spatial:
        raise NotImplementedError("Dropout's kernel rule is implemented for vector and "
                                  "diagonal-spatial kernels only.")
    factor = 1.0 / rate
    nngp, ntk = k.nngp, k.ntk
    if k.x1_is_x2:
        nngp = _scale_diagonal(nngp, factor)
        ntk = None if ntk is None else _scale_diagonal(ntk.expand_as(nngp), factor)
    return k.replace(nngp=nngp, ntk=ntk, cov1=k.cov1 * factor,
                     cov2=None if k.cov2 is None else k.cov2 * factor, is_gaussian=False)


__all__ = ["layer_norm_rule", "dropout_rule"]
