"""Rules that merge branches: FanInSum, FanInProd, FanInConcat.

* Sum of independent centred Gaussian branches: covariances and NTKs add.
* Product of independent branches: nngp = prod_i nngp_i and, by the product rule,
  ntk = sum_i ntk_i prod_{j != i} nngp_j.
* Concatenation along the (infinite) channel axis: each branch contributes in
  proportion to its channel count, nngp = sum_i n_i nngp_i / sum_i n_i.
"""
from __future__ import annotations

from typing import Sequence

from widelimit.kernels.state import Kernel


def _check_same(ks: Sequence[Kernel], what: str) -> None:
    if not ks:
        raise ValueError(f"{what} needs at least one input branch.")
    s1, s2 = ks[0].shape1[2:], ks[0].shape2[2:]
    for k in ks[1:]:
        if k.shape1[2:] != s1 or k.shape2[2:] != s2 or k.shape1[0] != ks[0].shape1[0]:
            raise ValueError(f"{what}: all branches must have the same batch and spatial shapes, got "
                             f"{[k.shape1 for k in ks]}.")
        if k.diagonal_spatial != ks[0].diagonal_spatial:
            raise ValueError(f"{what}: branches disagree on diagonal_spatial.")


def _sum(xs):
    return None if any(x is None for x in xs) else sum(xs[1:], xs[0])


def fan_in_sum_rule(ks: Sequence[Kernel]) -> Kernel:
    _check_same(ks, "FanInSum")
    for k in ks:
        if k.shape1[1] != ks[0].shape1[1]:
            raise ValueError(f"FanInSum: all branches must have the same number of channels, "
                             f"got {[k.shape1[1] for k in ks]}.")
    if len(ks) > 1 and not all(k.is_gaussian for k in ks):
        raise ValueError("FanInSum needs every branch to be a centred Gaussian (end each branch "
                         "with a Dense/Conv layer, or with Identity after one); got is_gaussian="
                         f"{[k.is_gaussian for k in ks]}.")
    return ks[0].replace(nngp=_sum([k.nngp for k in ks]), ntk=_sum([k.ntk for k in ks]),
                         cov1=_sum([k.cov1 for k in ks]), cov2=_sum([k.cov2 for k in ks]),
                         is_gaussian=all(k.is_gaussian for k in ks),
                         is_input=all(k.is_input for k in ks))


def _prod(xs):
    if any(x is None for x in xs):
        return None
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out


def fan_in_prod_rule(ks: Sequence[Kernel]) -> Kernel:
    _check_same(ks, "FanInProd")
    if len(ks) > 1 and not all(k.is_gaussian for k in ks):
        raise ValueError("FanInProd needs every branch to be a centred Gaussian; got is_gaussian="
                         f"{[k.is_gaussian for k in ks]}.")
    nngps = [k.nngp for k in ks]
    ntk = None
    if all(k.ntk is not None for k in ks):
        ntk = _sum([ks[i].ntk * _prod(nngps[:i] + nngps[i + 1:]) if len(ks) > 1 else ks[i].ntk
                    for i in range(len(ks))])
    return ks[0].replace(nngp=_prod(nngps), ntk=ntk, cov1=_prod([k.cov1 for k in ks]),
                         cov2=_prod([k.cov2 for k in ks]), is_gaussian=len(ks) == 1 and ks[0].is_gaussian,
                         is_input=False)


def fan_in_concat_rule(ks: Sequence[Kernel]) -> Kernel:
    """Concatenation along the channel axis (axis 1 in PyTorch layout, -1 for vectors)."""
    _check_same(ks, "FanInConcat")
    n = [k.shape1[1] for k in ks]
    total = float(sum(n))

    def mix(xs):
        if any(x is None for x in xs):
            return None
        return _sum([x * (ni / total) for x, ni in zip(xs, n)])

    shape1 = (ks[0].shape1[0], sum(n)) + tuple(ks[0].shape1[2:])
    shape2 = (ks[0].shape2[0], sum(n)) + tuple(ks[0].shape2[2:])
    return ks[0].replace(nngp=mix([k.nngp for k in ks]), ntk=mix([k.ntk for k in ks]),
                         cov1=mix([k.cov1 for k in ks]), cov2=mix([k.cov2 for k in ks]),
                         is_gaussian=all(k.is_gaussian for k in ks),
                         is_input=all(k.is_input for k in ks), shape1=shape1, shape2=shape2)


__all__ = ["fan_in_sum_rule", "fan_in_prod_rule", "fan_in_concat_rule"]
