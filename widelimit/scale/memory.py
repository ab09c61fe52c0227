"""Memory of this process: what is available, what the allocator holds, and the peak of a
computation (measured with a dispatch mode, op by op).  Used by the block planners of
:mod:`widelimit.scale.blocking` and :mod:`widelimit.scale.spatial`."""
from __future__ import annotations

import ctypes
import os
from typing import Callable, Optional, Union

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from widelimit._tensors import parse_bytes
from widelimit.kernels import _compile

__all__ = ["DEFAULT_FRACTION", "KernelMemoryError", "parse_memory", "format_bytes",
           "check_result_fits", "available_memory", "resolve_budget", "bytes_in_use", "PeakBytes",
           "MaxNumel", "malloc_trim", "tune_malloc"]

#: default budget: this fraction of the memory available when the call starts
DEFAULT_FRACTION = 0.5


def available_memory(device: Optional[torch.device] = None) -> int:
    """Bytes available now: free GPU memory for CUDA, else MemAvailable of /proc/meminfo."""
    if device is not None and torch.device(device).type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def parse_memory(value: Union[int, float, str], name: str = "max_memory") -> int:
    """Bytes of a memory budget: an int / float (``4e9``) or a string such as ``"4GB"``,
    ``"300KB"``, ``"512MiB"``.  ValueError naming ``name`` for NaN, infinity, zero, negative
    values and anything else."""
    return parse_bytes(value, name)


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest decimal unit (B, KB, MB, GB, TB) that keeps it >= 1,
    three significant digits: ``format_bytes(2.4e3) == "2.4KB"``."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}TB"


class KernelMemoryError(MemoryError, ValueError):
    """The result of a kernel call cannot fit into the memory budget.

    Raised before anything is allocated.  ``needed``: bytes the result needs; ``budget``:
    the budget in bytes (``max_memory``, or the memory available now when it is None).
    """

    def __init__(self, message: str, needed: int, budget: int):
        super().__init__(message)
        self.needed = int(needed)
        self.budget = int(budget)


def check_result_fits(result_bytes: int, max_memory: Union[None, int, float, str],
                      shape: tuple, device=None) -> None:
    """Raise :class:`KernelMemoryError` when ``result_bytes`` (the output of one call, of
    ``shape``) exceed ``max_memory`` or, when it is None, the memory available now."""
    if max_memory is None:
        if result_bytes < 2**26:        # 64 MB: not worth reading /proc/meminfo
            return
        budget, what = available_memory(device), "the memory available now"
    else:
        budget, what = parse_memory(max_memory), "max_memory"
    if result_bytes <= budget:
        return
    n1, n2 = shape
    raise KernelMemoryError(
        f"The kernel result ({n1} x {n2}) needs {format_bytes(result_bytes)}, more than "
        f"{what} ({format_bytes(budget)}); nothing was allocated.  Compute it out of core "
        f"instead with `wl.compute_kernel(kernel_fn, x1, x2, out=\"K.zarr\", block_size=1024)`, "
        f"or compute only the rows you need, in blocks: "
        f"`wl.batch(kernel_fn, block_size=1024)(x1[a:b], x2, get=...)`.",
        needed=result_bytes, budget=budget)


def resolve_budget(max_memory: Union[None, int, float, str], device=None) -> int:
    if max_memory is None:
        return int(DEFAULT_FRACTION * available_memory(device))
    return parse_bytes(max_memory, "max_memory")


class _Probe(TorchDispatchMode):
    """A dispatch mode that measures: no ``torch.compile`` inside it, and no Dynamo wrapper
    around it (torch wraps every mode's ``__torch_dispatch__`` in ``torch._dynamo.disable``
    by default, which imports Dynamo on first use: 1.3 s and 100 MB of resident memory
    for a kernel computation that never compiles)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    def __enter__(self):
        _compile.suspend(True)
        return super().__enter__()

    def __exit__(self, *exc):
        _compile.suspend(False)
        return super().__exit__(*exc)


class MaxNumel(_Probe):
    """Records the largest tensor produced by any operation."""

    def __init__(self):
        super().__init__()
        self.max_numel = 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


class _MallInfo(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _glibc_in_use() -> Optional[Callable[[], int]]:
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo
    return lambda: (lambda m: m.uordblks + m.hblkhd)(fn())


_GLIBC_IN_USE = _glibc_in_use()


def bytes_in_use(device: torch.device) -> Optional[int]:
    """Bytes the allocator holds for live allocations now: CUDA's caching allocator, or
    glibc's ``mallinfo2`` on CPU (in-use bytes of all arenas plus mmapped blocks, so worker
    threads count too; Python objects as well); None where neither is available."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    if device.type == "cpu" and _GLIBC_IN_USE is not None:
        return _GLIBC_IN_USE()
    return None


class PeakBytes(_Probe):
    """Records the largest tensor (as :class:`MaxNumel`) and the peak of
    :func:`bytes_in_use` after each operation, above its value on entry (``peak`` is None
    where it cannot be measured)."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = torch.device(device)
        self.max_numel = 1
        self.base = bytes_in_use(self.device)
        self.peak = None if self.base is None else 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        if self.peak is not None:
            self.peak = max(self.peak, bytes_in_use(self.device) - self.base)
        return out


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim: hand freed block memory back to the OS (freed per-thread arena
    memory otherwise accumulates in the resident set over thousands of blocks)."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
        return lambda: trim(0)
    except (OSError, AttributeError):
        return lambda: None


malloc_trim = _malloc_trim()


#: glibc ``mallopt`` parameters and the values :func:`tune_malloc` sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20
_tuned = {"done": False, "applied": False}


def tune_malloc() -> bool:
    """Keep freed kernel-sized blocks in the process for reuse (glibc only; once; opt-in).

    Does nothing unless the user opted in with :func:`widelimit.config.tune_runtime`
    (or ``WIDELIMIT_TUNE_RUNTIME=1``): ``mallopt`` changes every allocation of the host
    process and cannot be undone.  Called at the start of every kernel computation.

    A kernel computation allocates and frees the same (N1, N2, ...) intermediates over
    and over.  With glibc's defaults each block above its mmap threshold is a fresh
    ``mmap`` and its memory is handed back on ``free``, so every allocation pays a page
    fault per 4 KiB when first written (1 us or more each on a VM: 10.9 ms of a 4.8 ms
    attention kernel, 27 ms of a 62 ms FC kernel on 2000 inputs).  This sets the mmap
    threshold to 32 MiB and the trim threshold to 64 MiB -- where glibc's own dynamic
    thresholds end up after the first free of a 32 MiB block -- so intermediates come
    from the heap and up to 64 MiB of free heap stay mapped.  ``malloc_trim`` (called
    between blocks of large computations) still hands memory back.  Skipped when
    ``WIDELIMIT_TUNE_MALLOC=0`` or the user tunes malloc (``GLIBC_TUNABLES``,
    ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``).  Returns whether it applied.
    """
    if _tuned["done"]:
        return False
    from widelimit.config import runtime_tuning
    if not runtime_tuning().malloc:
        return False          # not opted in (yet): ask again at the next computation
    _tuned["done"] = True
    env = os.environ
    if (env.get("WIDELIMIT_TUNE_MALLOC", "1") == "0" or "GLIBC_TUNABLES" in env
            or "MALLOC_TRIM_THRESHOLD_" in env or "MALLOC_MMAP_THRESHOLD_" in env):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    _tuned["applied"] = (bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
                         and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    return _tuned["applied"]
