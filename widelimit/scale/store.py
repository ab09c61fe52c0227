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

import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch

from widelimit.scale.grid import Block, blocks as grid_blocks
from widelimit.scale.memory import resolve_budget

__all__ = ["compute_kernel", "open_kernel", "KernelStore", "StoreMismatchError"]

FORMAT_VERSION = 1
DONE_DIR = ".widelimit_done"
_ATTR = "widelimit"
#: working memory of one block in units of its result (inputs, intermediates, outputs, and
#: the previous block and its transpose while they are written)
_BLOCK_OVERHEAD = 10


class StoreMismatchError(ValueError):
    """An existing store was made from other inputs, another architecture ``spec``, other
    kernel names (``get``), another ``dtype`` or ``block_size``: resuming would mix two
    kernels.  The message names what differs; ``overwrite=True`` starts afresh."""


class KernelStore:
    """A kernel on disk written by :func:`compute_kernel` (or opened by :func:`open_kernel`).

    ``store["ntk"]`` is the Zarr array (read any slice of it without loading the rest);
    :meth:`to_numpy` / :meth:`to_tensor` load a whole kernel into memory."""

    def __init__(self, path: Union[str, os.PathLike]):
        import zarr
        self.path = os.fspath(path)
        try:
            self._group = zarr.open_group(self.path, mode="r")
            meta = dict(self._group.attrs[_ATTR])
        except (FileNotFoundError, KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{self.path!r} is not a widelimit kernel store ({e}).") from e
        self._meta = meta
        self.names: tuple[str, ...] = tuple(meta["get"])
        self.shape: tuple[int, int] = (int(meta["shape"][0]), int(meta["shape"][1]))
        self.dtype = getattr(torch, meta["dtype"])
        self.block_size = int(meta["block_size"])
        self.symmetric = bool(meta["symmetric"])
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
        return self._group[name]

    def to_numpy(self, name: str) -> np.ndarray:
        """The whole kernel ``name`` as an (N1, N2) NumPy array (refused while incomplete)."""
        if not self.complete:
            raise ValueError(f"{self.path!r} is incomplete ({self.blocks_done} of "
                             f"{self.blocks_total} blocks): run compute_kernel again to finish.")
        return np.asarray(self[name][...])

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
                   overwrite: bool = False) -> KernelStore:
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
        block_size: rows and columns of one block (= one Zarr chunk); default: the largest
            block whose working set (about 10 times its result, the block being written included) fits ``max_memory``.
        max_memory: memory budget of one block (bytes or e.g. ``"4GB"``; default: half of
            the available memory).
        client: a ``dask.distributed.Client`` (or a scheduler address) to compute the
            blocks on its workers; they write their chunks straight to ``out``, which must
            be a path all of them can reach.
        progress: show a tqdm progress bar (entries/s).
        spec: a JSON string describing the architecture, stored and compared on resume;
            default ``kernel_fn.__self__.to_json()`` when available, else its ``repr``.
        overwrite: discard an existing store at ``out`` (made by widelimit) and start afresh.

    Returns:
        The :class:`KernelStore` at ``out``.

    Raises:
        StoreMismatchError: ``out`` holds a kernel of other inputs, spec, get, dtype or
            block_size.
        ValueError: bad arguments, ``out`` not writable, not enough free disk space, or a
            ``max_memory`` smaller than one block.
    """
    names = _names(get)
    t1 = _as_input(x1, "x1")
    t2 = None if x2 is None else _as_input(x2, "x2")
    if t2 is not None and (t2.shape[1:] != t1.shape[1:] or t2.dtype != t1.dtype):
        raise ValueError(f"x1 and x2 must have the same shape past the batch axis and the "
                         f"same dtype, got {tuple(t1.shape)} {t1.dtype} and "
                         f"{tuple(t2.shape)} {t2.dtype}.")
    symmetric = t2 is None
    shape = (t1.shape[0], t1.shape[0] if t2 is None else t2.shape[0])
    itemsize = torch.empty((), dtype=t1.dtype).element_size()
    bs = _block_size(block_size, max_memory, shape, len(names), itemsize,
                     int(np.prod(t1.shape[1:], dtype=np.int64)))
    path = os.path.abspath(os.fspath(out))
    meta = {"format": FORMAT_VERSION, "spec": _spec(kernel_fn) if spec is None else str(spec),
            "dtype": str(t1.dtype).replace("torch.", ""), "inputs_hash": _hash(t1, t2),
            "shape": list(shape), "block_size": bs, "get": list(names), "symmetric": symmetric}
    existing = _existing(path, meta, overwrite)
    done = _done_blocks(path) if existing else set()
    grid = _grid(shape, bs, symmetric)
    pending = [b for b in grid if (b.i, b.j) not in done]
    _check_writable(path)
    _check_disk(path, shape, itemsize * len(names), len(pending) / max(len(grid), 1))
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
    outs = [res] if len(names) == 1 and not isinstance(res, (tuple, list)) else list(res)
    want = (b.rows.stop - b.rows.start, b.cols.stop - b.cols.start)
    if len(outs) != len(names):
        raise ValueError(f"kernel_fn returned {len(outs)} kernels for get={names}.")
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

    def write(b: Block, arrays) -> None:
        _write(path, b, arrays, symmetric)
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


def _write(path: str, b: Block, arrays: Iterable[np.ndarray], symmetric: bool) -> None:
    """Write block ``b`` (and its transpose off the diagonal of a symmetric kernel)."""
    import zarr
    group = zarr.open_group(path, mode="r+")
    for name, k in zip(group.attrs[_ATTR]["get"], arrays):
        # a block is whole chunks: skip zarr's scan for chunks equal to the fill value
        arr = group[name].with_config({"write_empty_chunks": True})
        k = k.astype(arr.dtype, copy=False)
        arr[b.rows, b.cols] = k
        if symmetric and not b.diagonal:
            # torch's blocked, threaded transpose: ~3x faster than NumPy's for large blocks
            arr[b.cols, b.rows] = torch.from_numpy(k).t().contiguous().numpy()


def _finished(path: str, b: Block, bar, symmetric: bool) -> None:
    _mark_done(path, b)
    if bar is not None:
        bar.update(_entries(b, symmetric))


def _entries(b: Block, symmetric: bool) -> int:
    n = (b.rows.stop - b.rows.start) * (b.cols.stop - b.cols.start)
    return n if not symmetric or b.diagonal else 2 * n


def _mark_done(path: str, b: Block) -> None:
    """Record block ``b`` as finished: temporary file + os.replace (atomic)."""
    d = os.path.join(path, DONE_DIR)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"i": b.i, "j": b.j, "time": time.time()}))
    os.replace(tmp, os.path.join(d, f"{b.i}_{b.j}"))


def _done_blocks(path: str) -> set[tuple[int, int]]:
    d = os.path.join(path, DONE_DIR)
    try:
        entries = os.listdir(d)
    except OSError:
        return set()
    done = set()
    for e in entries:
        parts = e.split("_")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            done.add((int(parts[0]), int(parts[1])))
    return done


def _remove_partials(path: str) -> None:
    """Temporary files a killed run left behind (zarr's ``*.partial`` chunks, ours)."""
    for root, _, files in os.walk(path):
        for f in files:
            if f.endswith(".partial") or (root.endswith(DONE_DIR) and f.startswith(".tmp-")):
                try:
                    os.unlink(os.path.join(root, f))
                except OSError:
                    pass


def _progress(progress: bool, shape, grid, pending, symmetric: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm
    total = shape[0] * shape[1]
    left = sum(_entries(b, symmetric) for b in pending)
    return tqdm(total=total, initial=total - left, unit="entries", unit_scale=True,
                desc="compute_kernel")


# ---------------------------------------------------------------- metadata and checks

def _grid(shape, bs: int, symmetric: bool) -> list[Block]:
    return grid_blocks(shape[0], shape[1], bs, symmetric)


def _names(get) -> tuple[str, ...]:
    names = (get,) if isinstance(get, str) else tuple(get) if isinstance(get, (tuple, list)) \
        else None
    if not names or not all(isinstance(n, str) and n for n in names) or \
            len(set(names)) != len(names):
        raise ValueError(f"`get` must be a kernel name or a tuple of distinct names such as "
                         f"('nngp', 'ntk'), got {get!r}.")
    return names


def _as_input(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a tensor or a NumPy array, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must be floating point, got {x.dtype}.")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"`{name}` needs at least one input (batch axis first), got shape "
                         f"{tuple(x.shape)}.")
    return x.detach()


def _hash(x1: torch.Tensor, x2: Optional[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for x in (x1, x2):
        if x is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(x.cpu().numpy())
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _spec(kernel_fn) -> str:
    owner = getattr(kernel_fn, "__self__", None)
    if owner is not None:
        to_json = getattr(owner, "to_json", None)
        if to_json is not None:
            try:
                return str(to_json())
            except (TypeError, AttributeError, ValueError, NotImplementedError):
                pass
        return repr(owner)
    return f"{getattr(kernel_fn, '__module__', '')}.{getattr(kernel_fn, '__qualname__', repr(kernel_fn))}"


def _block_size(block_size, max_memory, shape, n_names: int, itemsize: int, dim: int) -> int:
    budget = resolve_budget(max_memory)
    largest = max(shape)

    def need(b: int) -> int:
        b = min(b, largest)
        return _BLOCK_OVERHEAD * b * b * n_names * itemsize + 2 * b * dim * itemsize

    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"`block_size` must be a positive integer, got {block_size!r}.")
        if max_memory is not None and need(block_size) > budget:
            raise ValueError(f"max_memory={max_memory!r} ({budget} bytes) is smaller than one "
                             f"block of block_size={block_size} (about {need(block_size)} "
                             f"bytes): raise max_memory or lower block_size.")
        return min(block_size, largest)
    if need(1) > budget:
        raise ValueError(f"max_memory={max_memory!r} ({budget} bytes) is smaller than one "
                         f"block of a single entry (about {need(1)} bytes).")
    lo, hi = 1, largest
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(mid) <= budget else (lo, mid - 1)
    return lo if lo < 64 or lo == largest else lo - lo % 64


def _existing(path: str, meta: dict, overwrite: bool) -> bool:
    """Whether ``path`` holds a store of this very kernel to resume (else: create one)."""
    if not os.path.exists(path):
        return False
    if not os.path.isdir(path):
        raise ValueError(f"out={path!r} exists and is not a directory.")
    if not os.listdir(path):
        return False
    try:
        old = dict(KernelStore(path)._meta)
    except ValueError as e:
        raise ValueError(f"out={path!r} exists and is not a widelimit kernel store; "
                         f"choose another path or remove it.") from e
    if overwrite:
        return False
    differ = [k for k in ("format", "inputs_hash", "spec", "get", "dtype", "block_size",
                          "shape", "symmetric") if old.get(k) != meta[k]]
    if differ:
        details = "; ".join(f"{k}: stored {old.get(k)!r}, now {meta[k]!r}"
                            for k in differ if k not in ("inputs_hash", "spec")
                            ) or "see above"
        raise StoreMismatchError(
            f"out={path!r} holds a kernel of other {', '.join(differ)} ({details}); "
            f"pass overwrite=True to start afresh, or another path.")
    return True


def _check_writable(path: str) -> None:
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ValueError(f"out={path!r} is not writable: {probe!r} is not a directory.")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".widelimit-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ValueError(f"out={path!r} is not writable ({e}).") from e


def _check_disk(path: str, shape, bytes_per_entry: int, fraction_left: float) -> None:
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    need = int(shape[0] * shape[1] * bytes_per_entry * fraction_left)
    free = shutil.disk_usage(probe).free
    if need > free:
        raise ValueError(f"out={path!r}: the kernel needs {need / 2**30:.2f} GiB of disk space "
                         f"and {probe!r} has {free / 2**30:.2f} GiB free.")


def _create(path: str, meta: dict, shape, bs: int, dtype: torch.dtype, overwrite: bool) -> None:
    import zarr
    if os.path.isdir(path) and os.listdir(path):
        if not overwrite:
            raise ValueError(f"out={path!r} is not empty.")
        shutil.rmtree(path)
    group = zarr.open_group(path, mode="w")
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype
    for name in meta["get"]:
        group.create_array(name, shape=tuple(shape), chunks=(bs, bs), dtype=np_dtype,
                           fill_value=0, compressors=None)
    group.attrs[_ATTR] = meta
