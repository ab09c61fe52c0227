"""Apply a nonlinearity's dual to a whole kernel state (nngp, ntk, cov1, cov2)."""
from __future__ import annotations

from typing import Callable

from widelimit.kernels.state import Kernel, pair_variances, self_variances


def elementwise_rule(k: Kernel, dual: Callable, name: str) -> Kernel:
    """T = dual(nngp), ntk' = T_dot * ntk, and the variances through the same dual."""
    if not k.is_gaussian:
        raise ValueError(
            f"{name} needs Gaussian pre-activations: put a random affine layer "
            f"(Dense or Conv) before it. Its input here is "
            f"{'the raw network input' if k.is_input else 'the output of a non-Gaussian layer'}.")
    v1, v2 = pair_variances(k)
    nngp, t_dot = dual(k.nngp, v1, v2, k.ntk is not None)
    ntk = None if k.ntk is None else t_dot * k.ntk
    cov1 = dual(k.cov1, *self_variances(k, k.cov1), False)[0]
    cov2 = None if k.cov2 is None else dual(k.cov2, *self_variances(k, k.cov2), False)[0]
    return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, is_gaussian=False)


__all__ = ["elementwise_rule"]
