"""wl.compute_kernel / KernelStore (widelimit/scale/store.py, store_meta.py) in one process:
the stored kernel against the in-memory one, resume after an exception and after SIGKILL of
the `widelimit kernel` command (byte-identical stores), refused inputs (nothing written),
the KernelStore API and the progress bar.  The Dask side: tests/scale/test_distributed.py."""
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("zarr")

import widelimit as wl                                           # noqa: E402
from widelimit import layers as L                                # noqa: E402
from widelimit.scale import store_meta                           # noqa: E402
from widelimit.scale.store import DONE_DIR, StoreMismatchError   # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NET = L.serial(L.Dense(32, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(32, W_std=1.5, b_std=0.05),
               L.Relu(), L.Dense(1, W_std=1.5))
SPEC = NET.to_json()
BOTH = ("nngp", "ntk")


def _x(n, d=5, dtype=torch.float64, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _files(path):
    """Every file of the store but the finished-block record (which holds timestamps)."""
    path = Path(path)
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and DONE_DIR not in p.parts}


def _all_files(path):
    path = Path(path)
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


class Counting:
    """``kernel_fn`` counting its calls; raises after ``fail_after`` calls (a crash)."""

    def __init__(self, fail_after=None, fn=NET.kernel_fn):
        self.calls, self.fail_after, self.fn = 0, fail_after, fn

    def __call__(self, a, b=None, get=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        return self.fn(a, b, get=get)


# ---------------------------------------------------------------- the stored kernel

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("get", ["ntk", BOTH])
@pytest.mark.parametrize("with_x2", [False, True])
def test_store_is_the_in_memory_kernel(tmp_path, dtype, get, with_x2):
    """One block (block_size >= N): bit for bit.  Several blocks, sizes that do not divide
    N: to rounding (each block forms its own input Gram matrix; measured <= 2.2 eps of the
    largest entry), and an x2=None kernel exactly symmetric."""
    x, x2 = _x(23, dtype=dtype), (_x(11, dtype=dtype, seed=1) if with_x2 else None)
    want = NET.kernel_fn(x, x2, get=get)
    want = dict(zip((get,) if isinstance(get, str) else get,
                    (want,) if isinstance(get, str) else want))
    eps = torch.finfo(dtype).eps
    for bs in (4, 7, 23, 40):
        s = wl.compute_kernel(NET.kernel_fn, x, x2, out=tmp_path / f"K{bs}.zarr", get=get,
                              block_size=bs)
        assert s.complete and s.shape == (23, 11 if with_x2 else 23) and s.dtype == dtype
        for name, w in want.items():
            k = s.to_tensor(name)
            assert k.dtype == dtype and k.shape == w.shape
            if bs >= 23:
                assert torch.equal(k, w), (bs, name)
            else:
                err = (k - w).abs().max().item()
                assert 0 <= err <= 8 * eps * w.abs().max().item(), (bs, name, err)
            if not with_x2:
                assert torch.equal(k, k.T), (bs, name)


def test_numpy_inputs_give_the_same_store(tmp_path):
    x, x2 = _x(17, dtype=torch.float32), _x(9, dtype=torch.float32, seed=1)
    a = wl.compute_kernel(NET.kernel_fn, x, x2, out=tmp_path / "t.zarr", block_size=5)
    b = wl.compute_kernel(NET.kernel_fn, x.numpy(), x2.numpy(), out=tmp_path / "n.zarr",
                          block_size=5)
    assert _files(a.path) == _files(b.path)
    assert b.to_numpy("ntk").dtype == np.float32
    # the same inputs as NumPy resume the tensor-made store: nothing is recomputed
    f = Counting()
    c = wl.compute_kernel(f, x.numpy(), x2.numpy(), out=tmp_path / "t.zarr", block_size=5,
                          spec=a.spec)
    assert f.calls == 0 and c.complete


# ---------------------------------------------------------------- resume

@pytest.mark.parametrize("with_x2", [False, True])
def test_resume_after_a_crash_computes_only_the_rest(tmp_path, with_x2):
    x, x2 = _x(30), (_x(20, seed=1) if with_x2 else None)
    total = 15 if not with_x2 else 5 * 3
    ref = wl.compute_kernel(NET.kernel_fn, x, x2, out=tmp_path / "ref.zarr", block_size=7,
                            spec=SPEC)
    assert ref.blocks_total == total
    out = tmp_path / "K.zarr"
    crash = Counting(fail_after=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        wl.compute_kernel(crash, x, x2, out=out, block_size=7, spec=SPEC)
    part = wl.open_kernel(out)
    assert part.blocks_done == 5 and not part.complete
    with pytest.raises(ValueError, match=f"incomplete \\(5 of {total} blocks\\)"):
        part.to_numpy("ntk")
    rest = Counting()
    got = wl.compute_kernel(rest, x, x2, out=out, block_size=7, spec=SPEC)
    assert rest.calls == total - 5
    assert got.complete and got.blocks_done == total
    assert _files(out) == _files(ref.path)
    # a complete store: a third run computes nothing and changes nothing
    before, again = _all_files(out), Counting()
    wl.compute_kernel(again, x, x2, out=out, block_size=7, spec=SPEC)
    assert again.calls == 0 and _all_files(out) == before


def test_resume_without_block_size_uses_the_stored_one(tmp_path):
    """The default block size depends on the memory available now; a resume without
    block_size takes the store's, and refuses clearly when max_memory cannot hold it."""
    x, out = _x(30), tmp_path / "K.zarr"
    with pytest.raises(RuntimeError):
        wl.compute_kernel(Counting(fail_after=3), x, out=out, block_size=7, spec=SPEC)
    with pytest.raises(ValueError, match="started with block_size=7.*overwrite=True"):
        wl.compute_kernel(NET.kernel_fn, x, out=out, max_memory=1000, spec=SPEC)
    rest = Counting()
    got = wl.compute_kernel(rest, x, out=out, spec=SPEC)
    assert got.block_size == 7 and got.complete and rest.calls == 15 - 3
    ref = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "ref.zarr", block_size=7,
                            spec=SPEC)
    assert _files(out) == _files(ref.path)


def _cli(args, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "widelimit", "kernel", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.parametrize("n, bs, dtype", [(240, 20, torch.float64),     # chunks via zarr
                                         (640, 64, torch.float32)])    # O_DIRECT chunks
def test_sigkill_of_the_cli_then_rerun_is_byte_identical(tmp_path, n, bs, dtype):
    """`widelimit kernel ... --out K.zarr` killed with SIGKILL after >= 2 finished blocks,
    then run again: the store is byte for byte that of an uninterrupted run."""
    x = _x(n, d=8, dtype=dtype)
    arch, xf, out = tmp_path / "arch.json", tmp_path / "x.npy", tmp_path / "K.zarr"
    arch.write_text(SPEC)
    np.save(xf, x.numpy())
    args = ["--arch", str(arch), "--x", str(xf), "--out", str(out), "--block-size", str(bs),
            "--no-progress", "-q"]
    nb = -(-n // bs)
    total = nb * (nb + 1) // 2
    proc = _cli(args)
    done_dir, n, t0 = out / DONE_DIR, 0, time.monotonic()
    try:
        while time.monotonic() - t0 < 90 and proc.poll() is None:
            try:
                n = len([e for e in os.listdir(done_dir) if not e.startswith(".")])
            except OSError:
                n = 0
            if n >= 2:
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"the command ended first: {proc.communicate()[1]!r}"
        assert n >= 2, "no two blocks finished within 90 s"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    part = wl.open_kernel(out)
    assert 2 <= part.blocks_done < total and not part.complete
    rerun = _cli(args)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err.decode()
    got = wl.open_kernel(out)
    assert got.complete and got.blocks_done == total
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial") or
                p.name.startswith(".tmp-")]
    ref = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "ref.zarr", block_size=bs,
                            spec=L.from_json(SPEC).to_json())
    assert _files(out) == _files(ref.path)


# ---------------------------------------------------------------- refused inputs

@pytest.fixture
def stored(tmp_path):
    out = tmp_path / "K.zarr"
    wl.compute_kernel(NET.kernel_fn, _x(12), out=out, block_size=5)
    return out


@pytest.mark.parametrize("change, differ", [
    (dict(x1=_x(12, seed=3)), "inputs_hash"),
    (dict(spec="another architecture"), "spec"),
    (dict(get="ntk"), "get: stored ['nngp', 'ntk'], now ['ntk']"),
    (dict(block_size=6), "block_size: stored 5, now 6"),
    (dict(x1=_x(12, dtype=torch.float32)), "dtype: stored 'float64', now 'float32'"),
    (dict(x2=_x(4, seed=1)), "shape: stored [12, 12], now [12, 4]"),
])
def test_store_of_another_kernel_is_refused_and_left_unchanged(stored, change, differ):
    before = _all_files(stored)
    kw = dict(x1=_x(12), x2=None, block_size=5)
    kw.update(change)
    f = Counting()
    with pytest.raises(StoreMismatchError, match="holds a kernel of other .*" + differ.replace(
            "[", r"\[").replace("]", r"\]") + ".*overwrite=True"):
        wl.compute_kernel(f, kw.pop("x1"), kw.pop("x2"), out=stored,
                          spec=kw.pop("spec", SPEC), **kw)
    assert f.calls == 0 and _all_files(stored) == before
    # overwrite=True starts afresh: the new kernel, nothing of the old one
    kw2 = dict(x1=_x(12), x2=None, block_size=5, spec=SPEC)
    kw2.update(change)
    s = wl.compute_kernel(NET.kernel_fn, kw2.pop("x1"), kw2.pop("x2"), out=stored,
                          overwrite=True, **kw2)
    assert s.complete and s.blocks_done == s.blocks_total
    fresh = wl.compute_kernel(NET.kernel_fn, _x(12) if "x1" not in change else change["x1"],
                              change.get("x2"), out=stored.parent / "fresh.zarr",
                              get=change.get("get", BOTH), block_size=change.get("block_size", 5),
                              spec=change.get("spec", SPEC))
    assert _files(stored) == _files(fresh.path)


def test_other_paths_refused_with_nothing_written(tmp_path):
    x = _x(12)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="not a widelimit kernel store"):
            wl.compute_kernel(NET.kernel_fn, x, out=other, overwrite=overwrite)
    assert os.listdir(other) == ["notes.txt"] and (other / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        wl.compute_kernel(NET.kernel_fn, x, out=a_file)
    with pytest.raises(ValueError, match="is not writable: .*file' is not a directory"):
        wl.compute_kernel(NET.kernel_fn, x, out=a_file / "sub" / "K.zarr")
    assert a_file.read_text() == "x"
    with pytest.raises(ValueError, match="not a widelimit kernel store"):
        wl.open_kernel(other)
    with pytest.raises(ValueError, match="not a widelimit kernel store"):
        wl.open_kernel(tmp_path / "missing.zarr")
    assert sorted(os.listdir(tmp_path)) == ["file", "mine"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root ignores directory permissions")
def test_read_only_directory_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="not writable"):
            wl.compute_kernel(NET.kernel_fn, _x(12), out=ro / "K.zarr")
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o700)


def test_budget_smaller_than_one_block_refused_before_anything(tmp_path):
    out, f = tmp_path / "K.zarr", Counting()
    # one block of 16 rows, 2 kernels, float64: 10 * 16^2 * 2 * 8 + 2 * 16 * 5 * 8 = 42240 B
    with pytest.raises(ValueError, match=r"max_memory='1KB' \(1000 bytes\) is smaller than one "
                                         r"block of block_size=16 \(about 42240 bytes\)"):
        wl.compute_kernel(f, _x(40), out=out, block_size=16, max_memory="1KB")
    with pytest.raises(ValueError, match="smaller than one block of a single entry"):
        wl.compute_kernel(f, _x(40), out=out, max_memory=100)
    assert f.calls == 0 and not out.exists()
    # the default block size under a budget: the largest that fits (here 20 rows)
    s = wl.compute_kernel(NET.kernel_fn, _x(40), out=out, max_memory=70_000)
    b = s.block_size
    o = store_meta._BLOCK_OVERHEAD
    assert o * b * b * 2 * 8 + 2 * b * 5 * 8 <= 70_000 < o * (b + 1) ** 2 * 16 + 2 * (b + 1) * 80


def test_not_enough_disk_refused_before_anything(tmp_path, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(store_meta.shutil, "disk_usage", lambda p: usage(10**6, 10**6, 1000))
    out, f = tmp_path / "K.zarr", Counting()
    # 40 x 40 x 2 kernels x 8 bytes = 25600 bytes > 1000 free
    with pytest.raises(ValueError, match=r"needs 0\.00 GiB of disk space .* 0\.00 GiB free"):
        wl.compute_kernel(f, _x(40), out=out, block_size=16)
    assert f.calls == 0 and not out.exists()
    monkeypatch.setattr(store_meta.shutil, "disk_usage", lambda p: usage(10**9, 0, 25600))
    assert wl.compute_kernel(NET.kernel_fn, _x(40), out=out, block_size=16).complete


def test_bad_arguments_refused_with_nothing_written(tmp_path):
    out, x, f = tmp_path / "K.zarr", _x(12), Counting()
    for get in ((), ("ntk", "ntk"), 3, ("ntk", "")):
        with pytest.raises(ValueError, match="`get` must be a kernel name"):
            wl.compute_kernel(f, x, out=out, get=get)
    for bs in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="`block_size` must be a positive integer"):
            wl.compute_kernel(f, x, out=out, block_size=bs)
    with pytest.raises(TypeError, match="`x1` must be floating point, got torch.int64"):
        wl.compute_kernel(f, torch.arange(12).reshape(6, 2), out=out)
    with pytest.raises(TypeError, match="`x2` must be a tensor or a NumPy array, got list"):
        wl.compute_kernel(f, x, [[1.0] * 5], out=out)
    with pytest.raises(ValueError, match="`x1` needs at least one input"):
        wl.compute_kernel(f, x[:0], out=out)
    with pytest.raises(ValueError, match=r"same shape past the batch axis.*\(12, 5\).*\(4, 6\)"):
        wl.compute_kernel(f, x, _x(4, d=6), out=out)
    with pytest.raises(ValueError, match="same dtype"):
        wl.compute_kernel(f, x, _x(4, dtype=torch.float32), out=out)
    assert f.calls == 0
    with pytest.raises(ValueError, match="`get` must be one of"):      # the kernel_fn's own
        wl.compute_kernel(NET.kernel_fn, x, out=out, get="bogus")
    assert not out.exists()


def test_kernel_fn_of_wrong_shape_or_count_refused_with_nothing_written(tmp_path):
    out, x = tmp_path / "K.zarr", _x(12)

    def wide(a, b=None, get=None):      # one output per input: an (n, 1) "kernel"
        return torch.zeros(a.shape[0], 1, dtype=a.dtype)

    def one(a, b=None, get=None):
        return NET.kernel_fn(a, b, get="ntk")

    with pytest.raises(ValueError, match=r"ntk block of shape \(5, 1\), expected \(5, 5\)"):
        wl.compute_kernel(wide, x, out=out, get="ntk", block_size=5)
    with pytest.raises(ValueError, match=r"returned 1 kernel\(s\) for get=\('nngp', 'ntk'\), "
                                         r"expected 2"):
        wl.compute_kernel(one, x, out=out, block_size=5)
    assert not out.exists()


# ---------------------------------------------------------------- KernelStore, progress

def test_kernel_store_api(tmp_path):
    x, x2 = _x(12), _x(7, seed=1)
    s = wl.compute_kernel(NET.kernel_fn, x, x2, out=tmp_path / "K.zarr", block_size=5,
                          spec=SPEC)
    assert repr(s) == (f"KernelStore({s.path!r}, names=('nngp', 'ntk'), shape=(12, 7), "
                       f"dtype=torch.float64, blocks=6/6)")
    assert s.names == BOTH and s.block_size == 5 and not s.symmetric and s.spec == SPEC
    assert s.blocks_total == s.blocks_done == 6 and s.complete
    r = wl.open_kernel(tmp_path / "K.zarr")
    assert repr(r) == repr(s)
    k = r.to_numpy("nngp")
    assert np.array_equal(np.asarray(r["nngp"][3:9, 2:6]), k[3:9, 2:6])
    assert torch.equal(r.to_tensor("nngp"), torch.from_numpy(k))
    meta = json.loads((tmp_path / "K.zarr" / "zarr.json").read_text())["attributes"]["widelimit"]
    assert meta["shape"] == [12, 7] and meta["get"] == list(BOTH) and meta["format"] == 1
    with pytest.raises(KeyError, match=r"holds \('nngp', 'ntk'\), not 'cov'"):
        r["cov"]


def test_progress_bar(tmp_path, capsys):
    x = _x(30)
    ref = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "ref.zarr", block_size=7, spec=SPEC)
    with pytest.raises(RuntimeError):
        wl.compute_kernel(Counting(fail_after=4), x, out=tmp_path / "K.zarr", block_size=7,
                          spec=SPEC, progress=True)
    capsys.readouterr()
    got = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "K.zarr", block_size=7, spec=SPEC,
                            progress=True)
    err = capsys.readouterr().err
    assert "compute_kernel" in err and "900/900" in err.replace("entries", "")
    assert _files(got.path) == _files(ref.path)


def test_strip_transpose_is_exact_and_reuses_its_buffer():
    from widelimit.scale.chunkio import transposed as _transposed
    rng = np.random.default_rng(0)
    scratch = {}
    for shape in ((1100, 700), (513, 1), (3, 2000), (600, 600)):   # several strips, ragged
        k = rng.standard_normal(shape).astype(np.float32)
        t = _transposed(k, scratch)
        assert t.shape == shape[::-1] and t.flags.c_contiguous
        assert t.tobytes() == np.ascontiguousarray(k.T).tobytes()
    assert scratch["t"].size == 1100 * 700          # grown once, then reused
    assert _transposed(k).tobytes() == np.ascontiguousarray(k.T).tobytes()
