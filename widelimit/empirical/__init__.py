"""Empirical (finite-width) kernels of any ``torch.nn.Module``: NTK, NNGP, linearisation."""
from widelimit.empirical.ntk import NtkImplementation, empirical_ntk

__all__ = ["NtkImplementation", "empirical_ntk"]
