"""Scaling helpers: blocked kernel computation under a memory budget (blocks of input
pairs, and bands of spatial positions when one pair does not fit), and out-of-core kernels written
to a Zarr store (:func:`compute_kernel`)."""
from widelimit.scale.blocking import plan_blocks, run_blocked
from widelimit.scale.spatial import spatial_kernel
from widelimit.scale.store import KernelStore, StoreMismatchError, compute_kernel, open_kernel

__all__ = ["plan_blocks", "run_blocked", "spatial_kernel", "compute_kernel", "open_kernel",
           "KernelStore", "StoreMismatchError"]
