"""compute_kernel(mirror=False): a symmetric kernel stored as its upper block triangle
(widelimit/scale/symmetric.py).  The full matrix read back is identical to the mirrored
store's, any selection (slices, integer and boolean arrays, single rows, columns and
entries) equals the same selection of the full matrix, the lower chunks are never written
(NaN through zarr), resume and mismatches work as for full stores, and the solvers read it."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("zarr")

import widelimit as wl                                           # noqa: E402
from widelimit import layers as L                                # noqa: E402
from widelimit.scale.store import StoreMismatchError             # noqa: E402
from widelimit.scale.symmetric import UpperTriangleKernel       # noqa: E402

NET = L.serial(L.Dense(32, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(1, W_std=1.5))


def _x(n, dtype=torch.float64, seed=0):
    return torch.randn(n, 7, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _chunks(path, name):
    return sorted(str(p.relative_to(path)) for p in (Path(path) / name).rglob("*")
                  if p.is_file() and p.name != "zarr.json")


@pytest.mark.parametrize("bs, dtype", [(7, torch.float64),       # chunks through zarr
                                       (64, torch.float32)])     # O_DIRECT chunks
def test_upper_store_reads_back_the_full_matrix(tmp_path, bs, dtype):
    x = _x(150, dtype)
    full = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "f.zarr", block_size=bs)
    up = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "u.zarr", block_size=bs,
                           mirror=False)
    assert up.complete and not up.mirror and full.mirror
    for name in ("nngp", "ntk"):
        assert up.to_numpy(name).tobytes() == full.to_numpy(name).tobytes()
        nb = -(-150 // bs)
        assert len(_chunks(up.path, name)) == nb * (nb + 1) // 2       # upper blocks only
        assert len(_chunks(full.path, name)) == nb * nb
    raw = np.asarray(up._group["ntk"][bs:, :bs])                     # below the diagonal
    assert np.isnan(raw).all()
    assert isinstance(wl.open_kernel(up.path)["ntk"], UpperTriangleKernel)


def test_selections_equal_those_of_the_full_matrix(tmp_path):
    x = _x(150)
    up = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "u.zarr", block_size=16,
                           mirror=False, get="ntk")
    k, full = up["ntk"], NET.kernel_fn(x, get="ntk").numpy()
    assert k.shape == (150, 150) and k.ndim == 2 and k.dtype == np.float64
    tol = dict(rtol=1e-12, atol=0)
    rng = np.random.default_rng(0)
    r, c = rng.integers(0, 150, 40), rng.integers(0, 150, 25)
    np.testing.assert_allclose(k.oindex[r, c], full[np.ix_(r, c)], **tol)
    np.testing.assert_allclose(k[r], full[r], **tol)
    np.testing.assert_allclose(k[10:140:3, 5:77], full[10:140:3, 5:77], **tol)
    np.testing.assert_allclose(k[::-1, 3], full[::-1, 3], **tol)
    np.testing.assert_allclose(k[-1], full[-1], **tol)
    mask = rng.random(150) < 0.3
    np.testing.assert_allclose(k[mask, mask], full[np.ix_(mask, mask)], **tol)
    assert k[149, 0] == pytest.approx(full[149, 0], rel=1e-12)
    assert k[0, 149] == k[149, 0]
    np.testing.assert_allclose(np.asarray(k), full, **tol)
    assert k[5:5, :].shape == (0, 150)
    with pytest.raises(IndexError, match="2 axes"):
        k[1, 2, 3]
    with pytest.raises(IndexError, match="out of range"):
        k[150, 0]
    with pytest.raises(IndexError, match="out of range"):
        k.oindex[np.array([0, 151]), :]


def test_resume_and_mismatch(tmp_path):
    x, out = _x(60), tmp_path / "u.zarr"
    calls = {"n": 0}

    def crash_after_4(a, b=None, get=None):
        if calls["n"] >= 4:
            raise RuntimeError("simulated crash")
        calls["n"] += 1
        return NET.kernel_fn(a, b, get=get)

    with pytest.raises(RuntimeError, match="simulated"):
        wl.compute_kernel(crash_after_4, x, out=out, block_size=16, mirror=False, spec="s")
    got = wl.compute_kernel(NET.kernel_fn, x, out=out, block_size=16, mirror=False, spec="s")
    ref = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "r.zarr", block_size=16,
                            mirror=False, spec="s")
    assert got.to_numpy("ntk").tobytes() == ref.to_numpy("ntk").tobytes()
    with pytest.raises(StoreMismatchError, match="mirror: stored False, now True"):
        wl.compute_kernel(NET.kernel_fn, x, out=out, block_size=16, spec="s")
    with pytest.raises(TypeError, match="`mirror`"):
        wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "z.zarr", mirror="no")
    assert not (tmp_path / "z.zarr").exists()
    # a rectangular kernel is always stored whole
    rect = wl.compute_kernel(NET.kernel_fn, x, _x(20, seed=1), out=tmp_path / "rect.zarr",
                             block_size=16, mirror=False)
    assert rect.mirror and not isinstance(rect["ntk"], UpperTriangleKernel)


def test_solvers_read_an_upper_store(tmp_path):
    x = _x(300)
    y = torch.sin(x[:, :1]).numpy()
    up = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "u.zarr", block_size=64,
                           mirror=False, get="nngp")
    k = NET.kernel_fn(x, get="nngp").numpy()
    a = wl.KernelRidge(NET, kernel="nngp", solver="cg", ridge=0.1, tol=1e-12, store=up).fit(x, y)
    b = wl.KernelRidge(NET, kernel="nngp", solver="cg", ridge=0.1, tol=1e-12, store=k).fit(x, y)
    xt = _x(50, seed=2)
    np.testing.assert_allclose(a.predict(xt), b.predict(xt), rtol=1e-8, atol=1e-10)
    f = wl.KernelRidge(NET, kernel="nngp", solver="falkon", n_centers=100, ridge=0.1,
                       tol=1e-10, store=up).fit(x, y)
    g = wl.KernelRidge(NET, kernel="nngp", solver="falkon", n_centers=100, ridge=0.1,
                       tol=1e-10, store=k).fit(x, y)
    np.testing.assert_allclose(f.predict(xt), g.predict(xt), rtol=1e-8, atol=1e-10)


def test_cli_upper_only(tmp_path):
    from widelimit.cli import main
    x = _x(100)
    np.save(tmp_path / "x.npy", x.numpy())
    (tmp_path / "arch.json").write_text(NET.to_json())
    base = ["kernel", "--arch", str(tmp_path / "arch.json"), "--x", str(tmp_path / "x.npy"),
            "--block-size", "32", "--no-progress", "-q"]
    assert main(base + ["--out", str(tmp_path / "K.zarr"), "--upper-only"]) == 0
    s = wl.open_kernel(tmp_path / "K.zarr")
    assert not s.mirror
    np.testing.assert_allclose(s.to_numpy("ntk"), NET.kernel_fn(x, get="ntk").numpy(),
                               rtol=1e-12)
    assert main(base + ["--out", str(tmp_path / "K.npy"), "--upper-only"]) != 0
    assert not os.path.exists(tmp_path / "K.npy")
