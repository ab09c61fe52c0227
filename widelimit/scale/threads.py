"""Running kernel blocks on torch's threads: one block per thread, single-threaded torch
operations inside (no OpenMP barrier per operation), grad mode carried into the threads."""
from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Optional

import torch

from widelimit.scale.memory import malloc_trim

__all__ = ["TRIM_EVERY", "parallel_map", "single_thread"]

#: give memory back to the OS after this many blocks
TRIM_EVERY = 16


@contextlib.contextmanager
def single_thread(active: bool = True) -> Iterator[None]:
    """Run torch operations on one thread inside the block (when ``active``).

    For tensors of up to ``SMALL_PROBLEM`` entries waking a second OpenMP thread per
    operation costs more than it saves: FC depth 3 on 200 inputs took 11 ms on two
    threads and 3.1 ms on one (2-core machine, OMP_WAIT_POLICY=PASSIVE)."""
    threads = torch.get_num_threads()
    if not active or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def parallel_map(fn: Callable, items: list, device: torch.device,
                 workers: Optional[int] = None) -> list:
    """``[fn(item) for item in items]``, on CPU one item per thread (``workers``, default
    torch's thread count) with single-threaded operations: no barrier per operation (which
    costs a lot on small tensors and on shared machines); the same arithmetic per item.
    Grad mode is carried into the threads; freed memory is handed back to the OS every
    ``TRIM_EVERY`` items."""
    threads = torch.get_num_threads()
    workers = threads if workers is None else workers
    grad = torch.is_grad_enabled()     # thread-local: carry it into the worker threads

    def one(pair):
        t, item = pair
        with torch.set_grad_enabled(grad):
            out = fn(item)
        if t % TRIM_EVERY == TRIM_EVERY - 1:
            malloc_trim()
        return out

    if workers > 1 and len(items) > 1 and torch.device(device).type == "cpu":
        with single_thread(), ThreadPoolExecutor(min(workers, len(items))) as pool:
            return list(pool.map(one, enumerate(items)))
    return [one(pair) for pair in enumerate(items)]
