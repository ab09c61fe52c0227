"""Out-of-core kernels on a Dask cluster: the blocks of :func:`widelimit.compute_kernel`
computed on the workers of a ``dask.distributed`` cluster.

Each worker computes its block with the very function the single-process path uses
(``widelimit.scale.store._compute``) and writes its chunk straight into the Zarr store
(``_write``), so the result is identical to the last bit to a run in one process; only
``(i, j)`` travels back.  The driver records a block as finished as its future completes
(:func:`dask.distributed.as_completed`), so a rerun after any interruption resumes with or
without a cluster.  The inputs and the kernel function are sent to the workers once
(``client.scatter(..., broadcast=True)``); a block whose worker dies is recomputed on
another one (the scheduler's reassignment of lost tasks, plus ``retries`` for blocks that
raise), and since a block rewrites its whole chunks, a half-written chunk of a lost worker
is overwritten."""
from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

import torch

from widelimit.scale.grid import Block
from widelimit.scale.store import _compute, _write

__all__ = ["connect", "run_on_client"]

#: attempts per block beyond the first, for blocks whose computation raises on a worker
RETRIES = 3


def connect(address_or_client: Any, timeout: Optional[float] = None):
    """A ``dask.distributed.Client``: ``address_or_client`` itself when it is one, else a
    new client of the scheduler at that address (e.g. ``"tcp://10.0.0.5:8786"``), waiting
    at most ``timeout`` seconds (default: Dask's ``distributed.comm.timeouts.connect``).

    Raises:
        ImportError: ``dask.distributed`` is not installed.
        TypeError: neither a ``Client`` nor an address string.
        ValueError: ``timeout`` is not a positive number.
        ConnectionError: no scheduler answered within ``timeout`` seconds; the message
            names the address and says that nothing was written.
    """
    try:
        from dask.distributed import Client
    except ImportError:
        raise ImportError("a Dask cluster needs dask.distributed: "
                          "pip install 'dask[distributed]'.") from None
    if isinstance(address_or_client, Client):
        return address_or_client
    if not isinstance(address_or_client, str) or not address_or_client:
        raise TypeError(f"`client` must be a dask.distributed.Client or a scheduler address "
                        f"such as 'tcp://host:8786', got {address_or_client!r}.")
    if timeout is None:
        import dask
        from dask.utils import parse_timedelta
        timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"`timeout` must be a positive number of seconds, got {timeout!r}.")
    try:
        return Client(address_or_client, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as e:
        raise ConnectionError(f"no Dask scheduler answered at {address_or_client} within "
                              f"{timeout:g} s ({type(e).__name__}: {e}); nothing was "
                              f"written.") from None


class _Inputs:
    """An input tensor on its way to the workers.  Dask hands a worker its data in frames
    that need not be aligned (seen: 47 bytes past a 64-byte boundary), and BLAS rounds
    differently on unaligned memory, so each worker copies the tensor once into memory of
    its own (torch aligns to 64 bytes) when it unpickles it: its blocks are then identical
    to the last bit to the driver's."""

    def __init__(self, t: torch.Tensor):
        self.t = t

    def __getstate__(self):
        return self.t

    def __setstate__(self, t: torch.Tensor):
        self.t = t.clone(memory_format=torch.contiguous_format)


def _block_task(kernel_fn: Callable, x1: _Inputs, x2: Optional[_Inputs], b: Block,
                names: Sequence[str], shape, path: str) -> tuple[int, int]:
    """On a worker: compute block ``b`` and write its chunk(s) to the store at ``path``."""
    _write(path, b, _compute(kernel_fn, x1.t, None if x2 is None else x2.t, b, names, shape),
           x2 is None)
    return b.i, b.j


def run_on_client(client: Any, kernel_fn: Callable, x1: torch.Tensor,
                  x2: Optional[torch.Tensor], pending: Sequence[Block], path: str,
                  names: Sequence[str], shape, on_done: Callable[[Block], None],
                  retries: int = RETRIES, timeout: Optional[float] = None) -> None:
    """Compute and write the ``pending`` blocks on the workers of ``client``.

    ``on_done(block)`` is called on the driver as each block's future finishes (in order
    of completion); the first block that fails for good cancels the rest and its error is
    raised here.  ``client`` may be a scheduler address (connected with :func:`connect`
    and closed afterwards)."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"`retries` must be a non-negative integer, got {retries!r}.")
    own = not _is_client(client)
    client = connect(client, timeout)
    try:
        if not pending:
            return
        from dask.distributed import as_completed
        token = f"{time.time_ns():x}"
        # one copy of the inputs and the function per worker, sent once
        fn_f, x1_f = client.scatter([kernel_fn, _Inputs(x1)], broadcast=True, hash=False)
        x2_f = None if x2 is None else client.scatter(_Inputs(x2), broadcast=True, hash=False)
        by_key = {}
        for b in pending:
            fut = client.submit(_block_task, fn_f, x1_f, x2_f, b, tuple(names), tuple(shape),
                                path, key=f"widelimit-block-{b.i}-{b.j}-{token}",
                                retries=retries, pure=False)
            by_key[fut.key] = (fut, b)
        futures = [f for f, _ in by_key.values()]
        try:
            for fut in as_completed(futures):
                fut.result()            # raises the block's error on the driver
                on_done(by_key[fut.key][1])
        except BaseException:
            client.cancel(futures)
            raise
        finally:
            client.cancel([fn_f, x1_f] + ([] if x2_f is None else [x2_f]))
    finally:
        if own:
            client.close()


def _is_client(obj: Any) -> bool:
    try:
        from dask.distributed import Client
    except ImportError:
        return False
    return isinstance(obj, Client)

