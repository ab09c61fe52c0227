"""Chunks written past the page cache (widelimit/scale/chunkio.py) are the very files zarr
writes: a store written with O_DIRECT is byte-identical to one written through zarr
(ragged edge chunks, symmetric and rectangular, float32 and float64), and the writer falls
back to zarr where O_DIRECT is refused."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("zarr")

import widelimit as wl                                           # noqa: E402
from widelimit import layers as L                                # noqa: E402
from widelimit.scale import chunkio, store as store_mod          # noqa: E402
from widelimit.scale.store import DONE_DIR                       # noqa: E402

NET = L.serial(L.Dense(32, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(1, W_std=1.5))


def _x(n, dtype, seed=0):
    return torch.randn(n, 7, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _files(path):
    path = Path(path)
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and DONE_DIR not in p.parts}


def _direct_possible(tmp_path) -> bool:
    try:
        fd = os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except (OSError, AttributeError):
        return False
    os.close(fd)
    return True


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rect", [False, True])
def test_direct_chunks_are_the_files_zarr_writes(tmp_path, monkeypatch, dtype, rect):
    if not _direct_possible(tmp_path):
        pytest.skip("this filesystem has no O_DIRECT")
    x = _x(150, dtype)                              # chunks of 64, 64 and a ragged 22
    args = (x, _x(100, dtype, seed=1)) if rect else (x,)
    calls = {"direct": 0}
    real = chunkio.write_chunk

    def counting(*a, **k):
        ok = real(*a, **k)
        calls["direct"] += ok
        return ok

    monkeypatch.setattr(store_mod, "write_chunk", counting)
    direct = wl.compute_kernel(NET.kernel_fn, *args, out=tmp_path / "d.zarr", block_size=64)
    n_blocks = direct.blocks_total
    # every chunk went past zarr: symmetric off-diagonal blocks twice
    assert calls["direct"] == (3 * 3 if not rect else 3 * 2) * 2   # x 2 kernels
    assert n_blocks == (6 if not rect else 6)
    monkeypatch.setattr(store_mod, "direct_target", lambda arr: None)
    via_zarr = wl.compute_kernel(NET.kernel_fn, *args, out=tmp_path / "z.zarr", block_size=64)
    fd, fz = _files(tmp_path / "d.zarr"), _files(tmp_path / "z.zarr")
    assert fd.keys() == fz.keys()
    assert all(fd[k] == fz[k] for k in fd)
    want = NET.kernel_fn(*args, get="ntk").numpy()
    tol = (1e-12 if dtype == torch.float64 else 1e-5) * np.abs(want).max()
    np.testing.assert_allclose(direct.to_numpy("ntk"), want, rtol=0, atol=tol)


def test_falls_back_to_zarr_where_o_direct_is_refused(tmp_path, monkeypatch):
    real_open = os.open

    def no_direct(path, flags, *a, **kw):           # like tmpfs: EINVAL for O_DIRECT
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(chunkio.os, "open", no_direct)
    x = _x(150, torch.float32)
    s = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "K.zarr", block_size=64)
    want = NET.kernel_fn(x, get="nngp").numpy()
    np.testing.assert_allclose(s.to_numpy("nngp"), want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_unaligned_chunks_are_not_written_directly(tmp_path):
    import zarr
    g = zarr.open_group(tmp_path / "z.zarr", mode="w")
    a = g.create_array("k", shape=(40, 40), chunks=(16, 16), dtype="float64", fill_value=0,
                       compressors=None)                  # 2048-byte chunks
    assert chunkio.direct_target(a) is None
    assert not chunkio.write_chunk(a, 0, 0, np.ones((16, 16)))
    b = g.create_array("c", shape=(64, 64), chunks=(64, 64), dtype="float32", fill_value=0)
    assert chunkio.direct_target(b) is None               # compressed by default
