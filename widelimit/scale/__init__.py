"""Scaling: the execution layer (:mod:`widelimit.scale.execute`, which decides how a kernel
computation runs), ``wl.batch`` (:mod:`widelimit.scale.batch`), the block grid
(:mod:`widelimit.scale.grid`), blocked kernel computation under a memory budget (blocks of
input pairs, and bands of spatial positions when one pair does not fit), memory budgets
(:mod:`widelimit.scale.memory`), out-of-core kernel stores (:mod:`widelimit.scale.store`)
and Dask clusters (:func:`connect`, :mod:`widelimit.scale.distributed`; Dask is imported
only when used).  No module here imports ``widelimit.layers`` at import time."""
from widelimit.scale.batch import batch
from widelimit.scale.blocking import plan_blocks, run_blocked
from widelimit.scale.distributed import connect  # imports dask only when called
from widelimit.scale.execute import run
from widelimit.scale.grid import Block, blocks
from widelimit.scale.memory import KernelMemoryError, parse_memory
from widelimit.scale.spatial import spatial_kernel
from widelimit.scale.store import KernelStore, StoreMismatchError, compute_kernel, open_kernel

__all__ = ["run", "batch", "Block", "blocks", "KernelMemoryError", "parse_memory", "plan_blocks",
           "run_blocked", "spatial_kernel", "compute_kernel", "open_kernel", "KernelStore",
           "StoreMismatchError", "connect"]
