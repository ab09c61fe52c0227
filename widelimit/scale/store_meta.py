"""The bookkeeping of a kernel store (:mod:`widelimit.scale.store`): its metadata (checked
inputs and kernel names, the SHA-256 ``inputs_hash``, the architecture ``spec``), the choice
of the block size under a memory budget, the checks made before anything is written (an
existing store of another kernel, a path that is not writable, not enough free disk space)
and the finished-block record ``out/.widelimit_done/`` (one small file per block, written
through a temporary file and :func:`os.replace`, so that it exists only once the block's
chunks are complete on disk)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Optional

import numpy as np
import torch

from widelimit.scale.grid import Block, blocks as grid_blocks
from widelimit.scale.memory import resolve_budget

__all__ = ["StoreMismatchError", "FORMAT_VERSION", "DONE_DIR"]

FORMAT_VERSION = 1
DONE_DIR = ".widelimit_done"
_ATTR = "widelimit"
#: working memory of one block in units of its result (inputs, intermediates, outputs, and
#: the previous block and its transpose while they are written)
_BLOCK_OVERHEAD = 10
#: the metadata that must agree for a store to be resumed
_COMPARED = ("format", "inputs_hash", "spec", "get", "dtype", "block_size", "shape", "symmetric",
             "mirror")
#: metadata of stores written before a key existed
_DEFAULTS = {"mirror": True}


class StoreMismatchError(ValueError):
    """An existing store was made from other inputs, another architecture ``spec``, other
    kernel names (``get``), another ``dtype`` or ``block_size``: resuming would mix two
    kernels.  The message names what differs; ``overwrite=True`` starts afresh."""


# ---------------------------------------------------------------- arguments and metadata

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
    """SHA-256 of the inputs' dtype, shape and bytes (``x2=None`` hashed as such)."""
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
    """``block_size`` checked against ``max_memory``, or (None) the block size of the
    fewest blocks per axis whose working set, about
    ``_BLOCK_OVERHEAD b^2 n_names itemsize + 2 b dim itemsize`` bytes, fits it, balanced
    so that the blocks are about equal (a multiple of 64 from 64 on): N = 20 000 under
    4 GB in float32 gives 3 blocks of 6720 rows (6560 the last), not 9920, 9920 and 160,
    so the writes of one block overlap a computation of about the same length."""
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
    if lo >= largest:
        return largest
    if lo < 64:
        return lo
    n_blocks = -(-largest // (lo - lo % 64))
    even = -(-largest // n_blocks)                  # ceil(largest / n_blocks) <= lo
    rounded = even + (-even) % 64
    return rounded if rounded <= lo else lo - lo % 64


def _resume_block_size(path: str, old: dict, max_memory, shape, n_names: int, itemsize: int,
                       dim: int) -> int:
    """The block size of the existing store at ``path`` (metadata ``old``), checked against
    ``max_memory`` (a store of another kernel is refused later, by :func:`_existing`)."""
    stored = old.get("block_size")
    if isinstance(stored, bool) or not isinstance(stored, int) or stored < 1:
        return _block_size(None, max_memory, shape, n_names, itemsize, dim)
    try:
        return _block_size(stored, max_memory, shape, n_names, itemsize, dim)
    except ValueError as e:
        raise ValueError(f"out={path!r} was started with block_size={stored}, and {e} "
                         f"Pass overwrite=True to start afresh with smaller blocks.") from None


# ---------------------------------------------------------------- checks before writing

def _read_meta(path: str):
    """``(group, metadata)`` of the store at ``path``; ValueError when it is not one."""
    import zarr
    try:
        group = zarr.open_group(path, mode="r")
        meta = dict(group.attrs[_ATTR])
    except (FileNotFoundError, KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path!r} is not a widelimit kernel store ({e}).") from e
    missing = [k for k in _COMPARED if k not in meta]
    if missing:
        raise ValueError(f"{path!r} is not a widelimit kernel store (its metadata lacks "
                         f"{', '.join(missing)}).")
    return group, meta


def _stored_meta(path: str) -> Optional[dict]:
    """The metadata of the store at ``path``; None when there is nothing there (no path or
    an empty directory); ValueError for anything else that is not a store."""
    if not os.path.exists(path):
        return None
    if not os.path.isdir(path):
        raise ValueError(f"out={path!r} exists and is not a directory.")
    if not os.listdir(path):
        return None
    try:
        return _read_meta(path)[1]
    except ValueError as e:
        raise ValueError(f"out={path!r} exists and is not a widelimit kernel store; "
                         f"choose another path or remove it.") from e


def _existing(path: str, old: Optional[dict], meta: dict, overwrite: bool) -> bool:
    """Whether ``path``, holding the store of metadata ``old`` (``_stored_meta``; None:
    nothing), holds this very kernel to resume (else: create one)."""
    if old is None or overwrite:
        return False
    differ = [k for k in _COMPARED if old.get(k, _DEFAULTS.get(k)) != meta[k]]
    if differ:
        details = "; ".join(f"{k}: stored {old.get(k, _DEFAULTS.get(k))!r}, now {meta[k]!r}"
                            for k in differ if k not in ("inputs_hash", "spec")
                            ) or "see above"
        raise StoreMismatchError(
            f"out={path!r} holds a kernel of other {', '.join(differ)} ({details}); "
            f"pass overwrite=True to start afresh, or another path.")
    return True


def _first_existing(path: str) -> str:
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return probe


def _check_writable(path: str) -> None:
    probe = _first_existing(path)
    if not os.path.isdir(probe):
        raise ValueError(f"out={path!r} is not writable: {probe!r} is not a directory.")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".widelimit-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ValueError(f"out={path!r} is not writable ({e}).") from e


def _check_disk(path: str, shape, bytes_per_entry: int, fraction_left: float) -> None:
    probe = _first_existing(path)
    need = int(shape[0] * shape[1] * bytes_per_entry * fraction_left)
    free = shutil.disk_usage(probe).free
    if need > free:
        raise ValueError(f"out={path!r}: the kernel needs {need / 2**30:.2f} GiB of disk space "
                         f"and {probe!r} has {free / 2**30:.2f} GiB free.")


# ---------------------------------------------------------------- the finished-block record

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
