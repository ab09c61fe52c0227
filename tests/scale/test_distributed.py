"""wl.compute_kernel on a Dask cluster (widelimit/scale/distributed.py): a loopback
LocalCluster of two worker processes gives a store identical to the last bit to the
single-process one, resumes a partial store, survives a worker killed mid-run, and an
unreachable scheduler fails within the timeout with nothing written."""
import os
import signal
import socket
import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("dask.distributed")
pytest.importorskip("zarr")

import widelimit as wl                                           # noqa: E402
from widelimit import layers as L                                # noqa: E402
from widelimit.scale.distributed import connect                  # noqa: E402
from widelimit.scale.store import DONE_DIR                       # noqa: E402

NET = L.serial(L.Dense(64, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(64, W_std=1.5, b_std=0.05),
               L.Relu(), L.Dense(1, W_std=1.5))


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as c, Client(c) as client:
        yield c, client


def _x(n=90, d=5, dtype=torch.float64, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _same_store(a, b, names=("nngp", "ntk")):
    for name in names:
        ka, kb = a.to_numpy(name), b.to_numpy(name)
        assert ka.dtype == kb.dtype and ka.shape == kb.shape
        assert ka.tobytes() == kb.tobytes(), name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cluster_store_is_bit_identical_to_single_process(cluster, tmp_path, dtype):
    _, client = cluster
    x, x2 = _x(dtype=dtype), _x(37, dtype=dtype, seed=1)
    for args in ((x,), (x, x2)):
        ref = wl.compute_kernel(NET.kernel_fn, *args, out=tmp_path / "ref.zarr", block_size=16,
                                overwrite=True)
        got = wl.compute_kernel(NET.kernel_fn, *args, out=tmp_path / "dask.zarr", block_size=16,
                                client=client, overwrite=True)
        assert got.complete and got.blocks_done == ref.blocks_total
        _same_store(ref, got)
        # and both are the kernel itself (float64: to rounding)
        want = NET.kernel_fn(*args, get="ntk")
        np.testing.assert_allclose(got.to_numpy("ntk"), want.numpy(),
                                   rtol=1e-12 if dtype == torch.float64 else 1e-5, atol=0)


def test_scheduler_address_string(cluster, tmp_path):
    c, _ = cluster
    x = _x(40)
    ref = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "ref.zarr", block_size=16)
    got = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "dask.zarr", block_size=16,
                            client=c.scheduler_address)
    _same_store(ref, got)


def test_resume_on_a_cluster(cluster, tmp_path):
    """A store with some blocks finished (and one record lost, as after a crash between a
    chunk's write and its record) is finished on the cluster, identical to one run."""
    _, client = cluster
    x = _x()
    ref = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "ref.zarr", block_size=16)
    out = tmp_path / "part.zarr"
    wl.compute_kernel(NET.kernel_fn, x, out=out, block_size=16)
    done = sorted(os.listdir(out / DONE_DIR))
    for name in done[::2]:              # "crash": half of the records never written
        os.unlink(out / DONE_DIR / name)
    part = wl.open_kernel(out)
    assert not part.complete
    kept = {n: (out / DONE_DIR / n).read_text() for n in done[1::2]}
    got = wl.compute_kernel(NET.kernel_fn, x, out=out, block_size=16, client=client)
    assert got.complete
    _same_store(ref, got)
    # finished blocks were skipped: their records are untouched
    assert {n: (out / DONE_DIR / n).read_text() for n in kept} == kept


def test_worker_killed_mid_run_still_completes(cluster, tmp_path):
    """SIGKILL one worker process while blocks are running: its blocks are recomputed on
    the other worker (and the restarted one) and the store is still the exact kernel."""
    c, client = cluster
    x = _x(96)
    ref = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "ref.zarr", block_size=8)
    net = NET

    def slow(a, b=None, get=None):      # a closure: shipped by value to the workers
        time.sleep(0.05)
        return net.kernel_fn(a, b, get=get)

    out = tmp_path / "dask.zarr"
    killed = []

    def killer():
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            try:
                n = len(os.listdir(out / DONE_DIR))
            except OSError:
                n = 0
            if n >= 10:
                busy = {a for a, keys in client.processing().items() if keys}
                nanny = next((w for w in c.workers.values() if w.worker_address in busy), None)
                if nanny is not None:   # a worker with blocks in flight
                    os.kill(nanny.pid, signal.SIGKILL)
                    killed.append(n)
                    return
            time.sleep(0.01)

    th = threading.Thread(target=killer)
    th.start()
    got = wl.compute_kernel(slow, x, out=out, block_size=8, client=client, spec="slow")
    th.join()
    assert killed and killed[0] < got.blocks_total      # killed before the end
    assert got.complete and got.blocks_done == got.blocks_total == 78
    _same_store(ref, got)
    client.wait_for_workers(2, timeout=30)             # the nanny restarted it


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_clear_error_within_timeout_nothing_written(tmp_path):
    addr = f"tcp://127.0.0.1:{_closed_port()}"
    out = tmp_path / "K.zarr"
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=f"no Dask scheduler answered at {addr} within "
                                              f"1.5 s.*nothing was written"):
        connect(addr, timeout=1.5)
    import dask
    with dask.config.set({"distributed.comm.timeouts.connect": "1.5s"}), \
            pytest.raises(ConnectionError, match="nothing was written"):
        wl.compute_kernel(NET.kernel_fn, _x(20), out=out, client=addr)
    assert time.monotonic() - t0 < 2 * 1.5 + 10
    assert not out.exists()


def test_connect_bad_arguments(cluster):
    _, client = cluster
    assert connect(client) is client
    with pytest.raises(TypeError, match="client"):
        connect(8786)
    with pytest.raises(ValueError, match="timeout"):
        connect("tcp://127.0.0.1:1", timeout=0)


def test_cluster_upper_triangle_store(cluster, tmp_path):
    _, client = cluster
    x = _x()
    ref = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "ref.zarr", block_size=16,
                            mirror=False)
    got = wl.compute_kernel(NET.kernel_fn, x, out=tmp_path / "dask.zarr", block_size=16,
                            mirror=False, client=client)
    assert got.complete and not got.mirror
    _same_store(ref, got)
