"""Kernel state and the layer rules that transform it."""
from widelimit.kernels.state import Kernel, inputs_to_kernel

__all__ = ["Kernel", "inputs_to_kernel"]
