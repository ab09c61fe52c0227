"""The kernel state that travels between layers.

A :class:`Kernel` holds, for two batches of inputs ``x1`` (N1, C, *S) and
``x2`` (N2, C, *S) in PyTorch layout, the covariances of the pre-activations of
an infinitely wide layer:

* ``nngp`` -- Cov(z(x1), z(x2)): (N1, N2) for vectors; (N1, N2, *S) with
  ``diagonal_spatial=True``; (N1, N2, S1, S1, S2, S2, ...) (pairs interleaved,
  the neural-tangents layout) with ``diagonal_spatial=False``.
* ``ntk`` -- the neural tangent kernel with the same shape (or a 0-d zero before
  the first trainable layer).
* ``cov1`` / ``cov2`` -- the same quantity for each input against itself
  (batch-diagonal): (N1,), (N1, *S) or (N1, S1, S1, ...). ``cov2`` is None when
  ``x1_is_x2``.
* ``mask1`` / ``mask2`` -- boolean position masks (N, *S) (``True`` = masked, (N,) for
  vectors) of variable-length inputs, or None (:mod:`widelimit.kernels.masking`).

Mirrors the `Kernel` object of neural-tangents (Novak et al., 2020).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from widelimit._tensors import syrk_upper

__all__ = ["Kernel", "inputs_to_kernel", "pair_variances", "self_variances"]


@dataclass(frozen=True)
class Kernel:
    nngp: Tensor
    ntk: Optional[Tensor]
    cov1: Tensor
    cov2: Optional[Tensor]
    x1_is_x2: bool
    is_gaussian: bool
    shape1: tuple
    shape2: tuple
    is_input: bool = False
    diagonal_spatial: bool = True
    mask1: Optional[Tensor] = None
    mask2: Optional[Tensor] = None
    #: only the entries on and above the batch diagonal matter (x1 is x2, vector inputs):
    #: set by :func:`widelimit.scale.blocking.run_tiles`, which mirrors the result; rules
    #: may skip the rest (the native loops write zeros there)
    upper: bool = False
    #: ``nngp`` is a private buffer that the next rule may overwrite: set by ``run_tiles``
    #: for the input kernel it built, cleared by ``Serial`` before any rule but a native chain
    scratch: bool = False
    #: full-spatial kernels of the raw inputs: ``(nngp, f1, f2)`` with ``f = x / sqrt(C)``
    #: as (N, P, C), so that nngp[a, b] = f1[a] f2[b]^T; rules may use the factors while
    #: ``nngp`` is still that very tensor (``k.input_factors[0] is k.nngp``)
    input_factors: Optional[tuple] = None

    def replace(self, **changes) -> "Kernel":
        if self.input_factors is not None and "input_factors" not in changes and \
                changes.get("nngp", self.nngp) is not self.nngp:
            changes["input_factors"] = None     # stale, and it would keep the old nngp alive
        return dataclasses.replace(self, **changes)

    @property
    def n_spatial(self) -> int:
        return len(self.shape1) - 2

    # Arithmetic with neural-tangents semantics: ``k * a`` is the kernel of ``a * z``,
    # ``k + c`` the kernel of ``z + c`` (a constant shift adds c**2 to every covariance).
    def __mul__(self, a) -> "Kernel":
        var = a * a
        return self.replace(nngp=var * self.nngp, cov1=var * self.cov1,
                            cov2=None if self.cov2 is None else var * self.cov2,
                            ntk=None if self.ntk is None else var * self.ntk)

    __rmul__ = __mul__

    def __add__(self, c) -> "Kernel":
        var = c * c
        return self.replace(nngp=self.nngp + var, cov1=self.cov1 + var,
                            cov2=None if self.cov2 is None else self.cov2 + var)

    def __repr__(self) -> str:
        ntk = None if self.ntk is None else tuple(self.ntk.shape)
        return (f"Kernel(nngp={tuple(self.nngp.shape)}, ntk={ntk}, cov1={tuple(self.cov1.shape)}, "
                f"x1_is_x2={self.x1_is_x2}, is_gaussian={self.is_gaussian}, "
                f"shape1={self.shape1}, shape2={self.shape2}, diagonal_spatial={self.diagonal_spatial})")


def _interleave(x: Tensor, n_batch: int, n_spatial: int) -> Tensor:
    """(B.., S1..Sk, S1'..Sk') -> (B.., S1, S1', ..., Sk, Sk')."""
    perm = list(range(n_batch))
    for i in range(n_spatial):
        perm += [n_batch + i, n_batch + n_spatial + i]
    return x.permute(perm)


#: diagonal-spatial input kernels of at most this many channels are summed channel by
#: channel: a batched GEMM per position with an inner dimension of 3 was 4x slower
FEW_CHANNELS = 8


def inputs_to_kernel(x1: Tensor, x2: Optional[Tensor], *, diagonal_spatial: bool = True,
                     compute_ntk: bool = True, mask1: Optional[Tensor] = None,
                     mask2: Optional[Tensor] = None, upper_only: bool = False,
                     factors_only: bool = False) -> Kernel:
    """The kernel of the inputs themselves: covariances averaged over channels.

    ``nngp = x1 . x2 / C`` over the channel axis (axis 1), per spatial position
    (or per pair of positions when ``diagonal_spatial`` is False).  ``mask1`` /
    ``mask2`` are position masks of inputs whose masked entries are already zero.
    ``upper_only`` (vectors, ``x2`` None): ``nngp`` need only be right on and above the
    diagonal, so BLAS ``syrk`` may compute it with half the work of a GEMM (for
    :func:`widelimit.scale.blocking.run_tiles`, which reads nothing else).
    ``factors_only`` (full spatial): ``nngp`` is a zero placeholder without storage and only
    ``input_factors`` are real, for a first layer that reads nothing else.
    """
    x1_is_x2 = x2 is None
    xb = x1 if x2 is None else x2
    c = x1.shape[1]
    s = x1.ndim - 2
    # images: the 1/C goes on the factors, not on the (N1, N2, ...) result; on both as
    # 1/sqrt(C), so that the kernel of an input pair does not depend on the order of the pair
    if s == 0:
        # vectors: the 1/C on the product (syrk's alpha), not a pass over the inputs
        nngp = syrk_upper(x1, 1.0 / c) if upper_only and x1_is_x2 else None
        if nngp is None:
            nngp = x1 @ xb.T
            nngp = nngp.mul_(1.0 / c) if not nngp.requires_grad else nngp * (1.0 / c)
        # x1 against itself: the diagonal *is* cov1, bit for bit, so that every later
        # rule sees exactly collinear pairs there (angle 0) instead of rounding noise.
        cov1 = torch.diagonal(nngp).clone() if x1_is_x2 else torch.linalg.vecdot(x1, x1) / c
        cov2 = None if x1_is_x2 else torch.linalg.vecdot(xb, xb) / c
    elif diagonal_spatial:
        s1 = x1 * c ** -0.5
        sb = s1 if x1_is_x2 else xb * c ** -0.5
        if c <= FEW_CHANNELS:     # a few channels (RGB): C fused passes, not a batched GEMM
            nngp = s1[:, None, 0] * sb[None, :, 0]
            for i in range(1, c):
                nngp = nngp.addcmul_(s1[:, None, i], sb[None, :, i])
        else:
            nngp = torch.einsum("ac...,bc...->ab...", s1, sb)
        cov1 = (s1 * s1).sum(1)
        cov2 = None if x1_is_x2 else (sb * sb).sum(1)
    else:
        s1 = x1 * c ** -0.5
        f1 = s1.flatten(2)
        fb = f1 if x1_is_x2 else (xb * c ** -0.5).flatten(2)
        sp = tuple(x1.shape[2:])

        def full(a: Tensor, b: Tensor, batch_pairs: bool) -> Tensor:
            if batch_pairs:
                out = torch.einsum("acp,bcq->abpq", a, b)
                return _interleave(out.reshape(out.shape[:2] + sp + sp), 2, s)
            out = torch.einsum("acp,acq->apq", a, b)
            return _interleave(out.reshape(out.shape[:1] + sp + sp), 1, s)

        if factors_only:
            n2 = f1.shape[0] if x1_is_x2 else fb.shape[0]
            nngp = _interleave(f1.new_zeros(()).expand((f1.shape[0], n2) + sp + sp), 2, s)
        else:
            nngp = full(f1, fb, True)
        cov1 = full(f1, f1, False)
        cov2 = None if x1_is_x2 else full(fb, fb, False)
        factors = (nngp, f1.transpose(1, 2), fb.transpose(1, 2))
    ntk = torch.zeros((), dtype=x1.dtype, device=x1.device) if compute_ntk else None
    return Kernel(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, x1_is_x2=x1_is_x2,
                  is_gaussian=False, is_input=True, shape1=tuple(x1.shape),
                  shape2=tuple(xb.shape), diagonal_spatial=diagonal_spatial or s == 0,
                  mask1=mask1, mask2=None if x1_is_x2 else mask2,
                  input_factors=factors if s and not diagonal_spatial else None)


def _diag_spatial(cov: Tensor, n_spatial: int) -> Tensor:
    """(N, S1, S1, ..., Sk, Sk) -> (N, S1, ..., Sk): variances at each position."""
    for _ in range(n_spatial):
        # the first remaining pair sits at axes (1, 2) after previous diagonals moved to the end
        cov = torch.diagonal(cov, dim1=1, dim2=2)
    return cov


def pair_variances(k: Kernel) -> tuple[Tensor, Tensor]:
    """Variances ``(v1, v2)`` broadcastable against ``k.nngp``."""
    cov2 = k.cov1 if k.cov2 is None else k.cov2
    s = k.n_spatial
    if s == 0 or k.diagonal_spatial:
        return k.cov1.unsqueeze(1), cov2.unsqueeze(0)
    d1, d2 = _diag_spatial(k.cov1, s), _diag_spatial(cov2, s)
    shape1 = [d1.shape[0], 1]
    shape2 = [1, d2.shape[0]]
    for n in d1.shape[1:]:
        shape1 += [n, 1]
        shape2 += [1, n]
    return d1.reshape(shape1), d2.reshape(shape2)


def self_variances(k: Kernel, cov: Tensor) -> tuple[Tensor, Tensor]:
    """Variances ``(va, vb)`` broadcastable against a batch-diagonal ``cov`` (cov1 or cov2)."""
    s = k.n_spatial
    if s == 0 or k.diagonal_spatial:
        return cov, cov
    d = _diag_spatial(cov, s)
    sa, sb = [d.shape[0]], [d.shape[0]]
    for n in d.shape[1:]:
        sa += [n, 1]
        sb += [1, n]
    return d.reshape(sa), d.reshape(sb)
