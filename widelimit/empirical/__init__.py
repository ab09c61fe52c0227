"""Empirical (finite-width) kernels of any ``torch.nn.Module``.

* :func:`empirical_ntk` — the empirical NTK by Jacobian contraction, NTK-vector products or
  structured derivatives (:class:`NtkImplementation`), in blocks of examples;
* :func:`empirical_nngp` — inner products of outputs (or of a layer's outputs);
* :func:`empirical_kernel_fn` — both, neural-tangents style;
* :func:`linearize`, :func:`taylor_expand` — trainable Taylor expansions in the parameters.
"""
from widelimit.empirical.linearize import TaylorExpanded, linearize, taylor_expand
from widelimit.empirical.nngp import empirical_kernel_fn, empirical_nngp
from widelimit.empirical.ntk import NtkImplementation, empirical_ntk

__all__ = ["NtkImplementation", "TaylorExpanded", "empirical_kernel_fn", "empirical_nngp",
           "empirical_ntk", "linearize", "taylor_expand"]
