"""Out-of-core kernels: :func:`compute_kernel` writes an (N1, N2) kernel block by block into
a Zarr 3 store on disk, resumable after a crash (SIGKILL included) with a bit-identical
result, optionally on a Dask cluster (:mod:`widelimit.scale.distributed`).

Layout of ``out`` (a Zarr group): one 2-D array per kernel name (``"nngp"``, ``"ntk"``, ...)
chunked ``(block_size, block_size)``, so every block of the grid is one chunk; the group
attribute ``"widelimit"`` holds the metadata (architecture ``spec``, ``dtype``, a SHA-256
``inputs_hash``, ``shape``, ``block_size``, ``get``, ``format``).  Finished blocks are
recorded in ``out/.widelimit_done/`` (one small file per block, written through a temporary
file and :func:`os.replace` after the block's chunks are written), so a rerun skips exactly
the blocks whose data is complete on disk."""
from __future__ import annotations

import os
import shutil
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch

from widelimit.scale.chunkio import direct_target, transposed, write_chunk
from widelimit.scale.grid import Block
# the bookkeeping (metadata, checks, finished-block record) lives in store_meta; its names
# are re-exported here for widelimit.scale.distributed and the tests
from widelimit.scale.store_meta import (  # noqa: F401
    _ATTR, _BLOCK_OVERHEAD, DONE_DIR, FORMAT_VERSION, StoreMismatchError, _as_input,
    _block_size, _check_disk, _check_writable, _done_blocks, _existing, _grid, _hash,
    _mark_done, _names, _read_meta, _remove_partials, _resume_block_size, _spec, _stored_meta)

__all__ = ["compute_kernel", "open_kernel", "KernelStore", "StoreMismatchError"]


class KernelStore:
    """A kernel on disk written by :func:`compute_kernel` (or opened by :func:`open_kernel`).

    ``store["ntk"]`` is the Zarr array (read any slice of it without loading the rest), or
    for a store written with ``mirror=False`` an
    :class:`~widelimit.scale.symmetric.UpperTriangleKernel` reading the same selections of
    the full matrix; :meth:`to_numpy` / :meth:`to_tensor` load a whole kernel into memory."""

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = os.fspath(path)
        self._group, meta = _read_meta(self.path)
        self._meta = meta
        self.names: tuple[str, ...] = tuple(meta["get"])
        self.shape: tuple[int, int] = (int(meta["shape"][0]), int(meta["shape"][1]))
        self.dtype = getattr(torch, meta["dtype"])
        self.block_size = int(meta["block_size"])
        self.symmetric = bool(meta["symmetric"])
        #: whether the arrays hold the full matrix (else only its upper block triangle)
        self.mirror = bool(meta.get("mirror", True))
        self.spec = meta["spec"]
        self.blocks_total = len(_grid(self.shape, self.block_size, self.symmetric))

    @property
    def blocks_done(self) -> int:
        """Number of finished blocks (of the upper triangle when x2 was None)."""
        return len(_done_blocks(self.path))

    @property
    def complete(self) -> bool:
        """Whether every block is written."""
        return self.blocks_done >= self.blocks_total

    def __getitem__(self, name: str):
        if name not in self.names:
            raise KeyError(f"this store holds {self.names}, not {name!r}.")
        if not self.mirror:
            from widelimit.scale.symmetric import UpperTriangleKernel
            return UpperTriangleKernel(self._group[name], self.block_size)
        return self._group[name]

    def to_numpy(self, name: str) -> np.ndarray:
        """The whole kernel ``name`` as an (N1, N2) NumPy array (refused while incomplete)."""
        if not self.complete:
            raise ValueError(f"{self.path!r} is incomplete ({self.blocks_done} of "
                             f"{self.blocks_total} blocks): run compute_kernel again to finish.")
        return np.asarray(self[name][:, :])

    def to_tensor(self, name: str) -> torch.Tensor:
        """The whole kernel ``name`` as an (N1, N2) tensor."""
        return torch.from_numpy(self.to_numpy(name))

    def __repr__(self) -> str:
        return (f"KernelStore({self.path!r}, names={self.names}, shape={self.shape}, "
                f"dtype={self.dtype}, blocks={self.blocks_done}/{self.blocks_total})")


def open_kernel(path: Union[str, os.PathLike]) -> KernelStore:
    """Open a kernel store written by :func:`compute_kernel` (read only)."""
    return KernelStore(path)


def compute_kernel(kernel_fn: Callable, x1, x2=None, *, out: Union[str, os.PathLike],
                   get: Union[str, Sequence[str]] = ("nngp", "ntk"),
                   block_size: Optional[int] = None,
                   max_memory: Union[None, int, float, str] = None, client=None,
                   progress: bool = False, spec: Optional[str] = None,
                   overwrite: bool = False, mirror: bool = True) -> KernelStore:
    """Compute ``kernel_fn(x1, x2, get=get)`` block by block into the Zarr store ``out``.

    Block ``(i, j)`` is ``kernel_fn(x1[rows_i], x2[cols_j], get=get)``; with ``x2=None``
    only blocks with ``j >= i`` are computed (the diagonal ones as
    ``kernel_fn(x1[rows_i], None, get=get)``) and each is written with its transpose.
    Blocks are written as they finish; a finished-block record makes a rerun of the same
    call (after any crash, SIGKILL included) skip finished blocks, with a result identical
    to the last bit to an uninterrupted run.

    Args:
        kernel_fn: ``kernel_fn(x1, x2, get=names)`` returning one (n1, n2) kernel per name,
            e.g. a layer's ``net.kernel_fn``.
        x1, x2: inputs (tensors or arrays, floating point, first axis = batch).
        out: path of the store (a directory; created).
        get: kernel names to compute and store.
        block_size: rows and columns of one block (= one Zarr chunk); default: the fewest
            about equal blocks whose working set (about 10 times a block's result, the
            block being written included) fits ``max_memory``.
        max_memory: memory budget of one block (bytes or e.g. ``"4GB"``; default: half of
            the available memory).
        client: a ``dask.distributed.Client`` (or a scheduler address) to compute the
            blocks on its workers; they write their chunks straight to ``out``, which must
            be a path all of them can reach.
        progress: show a tqdm progress bar (entries/s).
        spec: a JSON string describing the architecture, stored and compared on resume;
            default ``kernel_fn.__self__.to_json()`` when available, else its ``repr``.
        overwrite: discard an existing store at ``out`` (made by widelimit) and start afresh.
        mirror: for ``x2=None``, also write each off-diagonal block's transpose, so the
            Zarr arrays hold the full matrix (default).  ``mirror=False`` stores only the
            upper block triangle: half the disk and half the writes; the chunks below the
            diagonal read as NaN through zarr, and ``store[name]`` is then an
            :class:`~widelimit.scale.symmetric.UpperTriangleKernel` that reads any
            selection of the full matrix.

    Returns:
        The :class:`KernelStore` at ``out``.

    Raises:
        StoreMismatchError: ``out`` holds a kernel of other inputs, spec, get, dtype or
            block_size.
        ValueError: bad arguments, ``out`` not writable, not enough free disk space, or a
            ``max_memory`` smaller than one block.
    """
    names = _names(get)
    if not isinstance(mirror, bool):
        raise TypeError(f"`mirror` must be True or False, got {mirror!r}.")
    t1 = _as_input(x1, "x1")
    t2 = None if x2 is None else _as_input(x2, "x2")
    if t2 is not None and (t2.shape[1:] != t1.shape[1:] or t2.dtype != t1.dtype):
        raise ValueError(f"x1 and x2 must have the same shape past the batch axis and the "
                         f"same dtype, got {tuple(t1.shape)} {t1.dtype} and "
                         f"{tuple(t2.shape)} {t2.dtype}.")
    symmetric = t2 is None
    shape = (t1.shape[0], t1.shape[0] if t2 is None else t2.shape[0])
    itemsize = torch.empty((), dtype=t1.dtype).element_size()
    dim = int(np.prod(t1.shape[1:], dtype=np.int64))
    path = os.path.abspath(os.fspath(out))
    old = _stored_meta(path)        # refuses a path that holds something else
    if block_size is None and old is not None and not overwrite:
        # resume with the block size the store was started with (the default one depends
        # on the memory available now)
        bs = _resume_block_size(path, old, max_memory, shape, len(names), itemsize, dim)
    else:
        bs = _block_size(block_size, max_memory, shape, len(names), itemsize, dim)
    meta = {"format": FORMAT_VERSION, "spec": _spec(kernel_fn) if spec is None else str(spec),
            "dtype": str(t1.dtype).replace("torch.", ""), "inputs_hash": _hash(t1, t2),
            "shape": list(shape), "block_size": bs, "get": list(names), "symmetric": symmetric,
            "mirror": mirror or not symmetric}
    existing = _existing(path, old, meta, overwrite)
    done = _done_blocks(path) if existing else set()
    grid = _grid(shape, bs, symmetric)
    pending = [b for b in grid if (b.i, b.j) not in done]
    _check_writable(path)
    # entries still to write: off-diagonal blocks of a mirrored kernel twice
    left = sum(_area(b) * (2 if symmetric and meta["mirror"] and not b.diagonal else 1)
               for b in pending)
    _check_disk(path, shape, itemsize * len(names), left / (shape[0] * shape[1]))
    own_client = isinstance(client, str)
    if client is not None:      # connect before anything is written
        from widelimit.scale.distributed import connect
        client = connect(client)
    if existing:
        _remove_partials(path)
    elif client is None and pending:
        # compute the first block before creating anything: bad inputs write nothing
        first = _compute(kernel_fn, t1, t2, pending[0], names, shape)
        _create(path, meta, shape, bs, t1.dtype, overwrite)
        _write(path, pending[0], first, symmetric)
        _mark_done(path, pending[0])
        pending = pending[1:]
    else:
        _create(path, meta, shape, bs, t1.dtype, overwrite)
    bar = _progress(progress, shape, grid, pending, symmetric)
    try:
        if client is not None:
            from widelimit.scale.distributed import run_on_client
            run_on_client(client, kernel_fn, t1, t2, pending, path, names, shape,
                          on_done=lambda b: _finished(path, b, bar, symmetric))
        else:
            _run_local(kernel_fn, t1, t2, pending, path, names, shape, bar, symmetric)
    finally:
        if bar is not None:
            bar.close()
        if own_client:
            client.close()
    return KernelStore(path)


# ---------------------------------------------------------------- computing and writing

def _compute(kernel_fn, x1, x2, b: Block, names, shape) -> list[np.ndarray]:
    """The kernels of block ``b`` as NumPy arrays, checked for their shape."""
    a = x1[b.rows]
    res = kernel_fn(a, None, get=names) if x2 is None and b.diagonal else \
        kernel_fn(a, (x1 if x2 is None else x2)[b.cols], get=names)
    # one array is one kernel (never a sequence of rows), whatever ``get`` asked for
    outs = [res] if isinstance(res, (torch.Tensor, np.ndarray)) or \
        not isinstance(res, (tuple, list)) else list(res)
    want = (b.rows.stop - b.rows.start, b.cols.stop - b.cols.start)
    if len(outs) != len(names):
        raise ValueError(f"kernel_fn returned {len(outs)} kernel(s) for get={names}, "
                         f"expected {len(names)} (one per name, in that order).")
    arrays = []
    for name, k in zip(names, outs):
        k = k.detach().cpu().numpy() if isinstance(k, torch.Tensor) else np.asarray(k)
        if k.shape != want:
            raise ValueError(f"kernel_fn returned a {name} block of shape {k.shape}, expected "
                             f"{want} (kernels of batch axes only are stored).")
        arrays.append(k)
    return arrays


def _run_local(kernel_fn, x1, x2, pending, path: str, names, shape, bar,
               symmetric: bool) -> None:
    """Compute the ``pending`` blocks in this process, writing block ``k`` on one writer
    thread while block ``k + 1`` is computed (the store's writes cost about as much as the
    kernel); a block is recorded as finished only after its chunks are on disk, and a
    failed write stops the run with its error."""
    from concurrent.futures import ThreadPoolExecutor
    scratch: dict = {}          # the writer's transpose buffer, reused block after block

    def write(b: Block, arrays) -> None:
        _write(path, b, arrays, symmetric, scratch)
        _finished(path, b, bar, symmetric)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="widelimit-store") as pool:
        inflight = None
        for b in pending:
            arrays = _compute(kernel_fn, x1, x2, b, names, shape)
            if inflight is not None:
                inflight.result()           # at most one block waits to be written
            inflight = pool.submit(write, b, arrays)
        if inflight is not None:
            inflight.result()


def _write(path: str, b: Block, arrays: Iterable[np.ndarray], symmetric: bool,
           scratch: Optional[dict] = None) -> None:
    """Write block ``b`` (and its transpose off the diagonal of a symmetric kernel), past
    the page cache where the filesystem allows (:mod:`widelimit.scale.chunkio`), else
    through zarr; ``scratch``: a dict in which a caller writing many blocks keeps its
    buffers."""
    import zarr
    scratch = {} if scratch is None else scratch
    group = zarr.open_group(path, mode="r+")
    meta = group.attrs[_ATTR]
    bs, mirror = int(meta["block_size"]), bool(meta.get("mirror", True))
    for name, k in zip(group.attrs[_ATTR]["get"], arrays):
        # a block is whole chunks: skip zarr's scan for chunks equal to the fill value
        arr = group[name].with_config({"write_empty_chunks": True})
        k = k.astype(arr.dtype, copy=False)
        target = direct_target(arr)
        i, j = b.rows.start // bs, b.cols.start // bs       # the block's chunk
        if not write_chunk(arr, i, j, k, scratch, target):
            arr[b.rows, b.cols] = k
        if symmetric and mirror and not b.diagonal:
            if not write_chunk(arr, j, i, k, scratch, target, transpose=True):
                arr[b.cols, b.rows] = transposed(k, scratch)


def _finished(path: str, b: Block, bar, symmetric: bool) -> None:
    _mark_done(path, b)
    if bar is not None:
        bar.update(_entries(b, symmetric))


def _area(b: Block) -> int:
    return (b.rows.stop - b.rows.start) * (b.cols.stop - b.cols.start)


def _entries(b: Block, symmetric: bool) -> int:
    n = _area(b)
    return n if not symmetric or b.diagonal else 2 * n


def _progress(progress: bool, shape, grid, pending, symmetric: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm
    total = shape[0] * shape[1]
    left = sum(_entries(b, symmetric) for b in pending)
    return tqdm(total=total, initial=total - left, unit="entries", unit_scale=True,
                desc="compute_kernel")


def _create(path: str, meta: dict, shape, bs: int, dtype: torch.dtype, overwrite: bool) -> None:
    import zarr
    if os.path.isdir(path) and os.listdir(path):
        if not overwrite:
            raise ValueError(f"out={path!r} is not empty.")
        shutil.rmtree(path)
    group = zarr.open_group(path, mode="w")
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    # an upper-triangle store: the chunks never written below the diagonal read as NaN
    fill = 0 if meta.get("mirror", True) else float("nan")
    for name in meta["get"]:
        group.create_array(name, shape=tuple(shape), chunks=(bs, bs), dtype=np_dtype,
                           fill_value=fill, compressors=None)
    group.attrs[_ATTR] = meta
