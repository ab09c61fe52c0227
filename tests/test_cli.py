"""The ``widelimit`` command (widelimit/cli.py): kernels to .npy / .npz / .csv with the values
of ``kernel_fn``, fit / predict against the closed-form kernel regression, --help on every
subcommand, and bad input -> one line on stderr, exit code 2, nothing written."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import widelimit as wl
from widelimit import layers as L
from widelimit.cli import main

ROOT = Path(__file__).resolve().parents[1]
NET = L.serial(L.Dense(64, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(64, W_std=1.5, b_std=0.05),
               L.Relu(), L.Dense(1, W_std=1.5))


def run_cli(*argv, timeout=120):
    """``python -m widelimit ARGV`` in a subprocess from this source tree."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "widelimit", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    xt = rng.normal(size=(7, 3))
    y = np.stack([np.sin(2 * x[:, 0]), x[:, 1] * x[:, 2]], 1)
    paths = {"arch": tmp_path / "arch.json", "x": tmp_path / "x.npy", "xt": tmp_path / "xt.npy",
             "y": tmp_path / "y.npy", "y1": tmp_path / "y1.npy"}
    paths["arch"].write_text(NET.to_json(indent=2))
    np.save(paths["x"], x)
    np.save(paths["xt"], xt)
    np.save(paths["y"], y)
    np.save(paths["y1"], y[:, 0])
    return tmp_path, paths, (x, xt, y)


def test_kernel_npy_npz_csv_values(files, capsys):
    tmp, p, (x, xt, _) = files
    assert main(["kernel", "--arch", str(p["arch"]), "--x", str(p["x"]), "--out", str(tmp / "K.npy"),
                 "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().err
    np.testing.assert_allclose(np.load(tmp / "K.npy"), NET.kernel_fn(x, get="ntk"), rtol=1e-12, atol=0)
    assert main(["kernel", "--arch", str(p["arch"]), "--x", str(p["x"]), "--x2", str(p["xt"]),
                 "--out", str(tmp / "K.npz"), "--no-progress", "-q"]) == 0
    want = NET.kernel_fn(x, xt, get=("nngp", "ntk"))
    with np.load(tmp / "K.npz") as z:
        assert sorted(z.files) == ["nngp", "ntk"]
        np.testing.assert_allclose(z["nngp"], want.nngp, rtol=1e-12, atol=0)
        np.testing.assert_allclose(z["ntk"], want.ntk, rtol=1e-12, atol=0)
    # csv in (with a header line), csv out, float32, the arch given inline
    np.savetxt(tmp / "x.csv", x, delimiter=",", header="a,b,c", comments="")
    assert main(["kernel", "--arch", NET.to_json(), "--x", str(tmp / "x.csv"), "--get", "nngp",
                 "--dtype", "float32", "--out", str(tmp / "K.csv"), "-q", "--no-progress"]) == 0
    got = np.loadtxt(tmp / "K.csv", delimiter=",")
    np.testing.assert_allclose(got, NET.kernel_fn(x.astype(np.float32), get="nngp"), rtol=1e-6)
    assert capsys.readouterr().err == ""


def test_existing_output_needs_overwrite(files, capsys):
    tmp, p, _ = files
    (tmp / "K.npy").write_bytes(b"old")
    argv = ["kernel", "--arch", str(p["arch"]), "--x", str(p["x"]), "--out", str(tmp / "K.npy"), "-q"]
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert (tmp / "K.npy").read_bytes() == b"old"
    assert main(argv + ["--overwrite", "--no-progress"]) == 0
    assert np.load(tmp / "K.npy").shape == (40, 40)


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_fit_predict_is_kernel_ridge_regression(files, kernel):
    tmp, p, (x, xt, y) = files
    model = tmp / "model.npz"
    assert main(["fit", "--arch", str(p["arch"]), "--x", str(p["x"]), "--y", str(p["y"]), "--out",
                 str(model), "--kernel", kernel, "--diag-reg", "1e-3", "-q", "--no-progress"]) == 0
    assert main(["predict", "--model", str(model), "--x", str(p["xt"]), "--out", str(tmp / "pred.npy"),
                 "-q", "--no-progress"]) == 0
    k = np.asarray(NET.kernel_fn(x, get=kernel))
    k_test = np.asarray(NET.kernel_fn(xt, x, get=kernel))
    reg = 1e-3 * np.mean(np.diag(k))
    mean = y.mean(0)
    want = k_test @ np.linalg.solve(k + reg * np.eye(len(x)), y - mean) + mean
    pred = np.load(tmp / "pred.npy")
    assert pred.shape == (7, 2)
    np.testing.assert_allclose(pred, want, rtol=1e-8, atol=1e-10)
    # the model file holds the spec, the training inputs and the solution
    with np.load(model, allow_pickle=False) as z:
        assert L.from_json(str(z["spec"])).to_json() == NET.to_json()
        np.testing.assert_array_equal(z["x_train"], x)
        assert json.loads(str(z["meta"]))["kernel"] == kernel


def test_fit_predict_one_target_csv(files):
    tmp, p, (x, xt, y) = files
    model = tmp / "m.npz"
    assert main(["fit", "--arch", str(p["arch"]), "--x", str(p["x"]), "--y", str(p["y1"]), "--out",
                 str(model), "--no-center", "-q", "--no-progress"]) == 0
    assert main(["predict", "--model", str(model), "--x", str(p["xt"]), "--out", str(tmp / "p.csv"),
                 "-q", "--no-progress"]) == 0
    pred = np.loadtxt(tmp / "p.csv", delimiter=",")
    k = np.asarray(NET.kernel_fn(x, get="ntk"))
    want = np.asarray(NET.kernel_fn(xt, x, get="ntk")) @ np.linalg.solve(
        k + 1e-6 * np.mean(np.diag(k)) * np.eye(len(x)), y[:, 0])
    assert pred.shape == (7,)
    np.testing.assert_allclose(pred, want, rtol=1e-6, atol=1e-9)


def _bad_cases(tmp, p):
    np.save(tmp / "x4.npy", np.zeros((5, 4)))
    np.save(tmp / "strings.npy", np.array(["a", "b"]))
    np.save(tmp / "nan.npy", np.array([[np.nan, 1.0]]))
    (tmp / "bad.json").write_text('{"format": "widelimit-architecture", "version": 1, '
                                  '"architecture": {"layer": "Dense", "args": [-1]}}')
    (tmp / "broken.json").write_text("{not json")
    (tmp / "notmodel.npz").write_bytes(b"nope")
    arch, x, out = str(p["arch"]), str(p["x"]), str(tmp / "K.npy")
    k = ["kernel", "--arch", arch, "--x", x, "--out"]
    return [
        (["kernel", "--arch", arch, "--x", str(tmp / "missing.npy"), "--out", out], "--x: no such file"),
        (["kernel", "--arch", str(tmp / "missing.json"), "--x", x, "--out", out], "--arch: no such file"),
        (["kernel", "--arch", str(tmp / "bad.json"), "--x", x, "--out", out], r"--arch: architecture: Dense"),
        (["kernel", "--arch", str(tmp / "broken.json"), "--x", x, "--out", out], "not valid JSON"),
        (["kernel", "--arch", arch, "--x", x, "--x2", str(tmp / "x4.npy"), "--out", out], "--x2: examples of shape"),
        (["kernel", "--arch", arch, "--x", str(tmp / "strings.npy"), "--out", out], "expected numbers"),
        (["kernel", "--arch", arch, "--x", str(tmp / "nan.npy"), "--out", out], "NaN"),
        (k + [str(tmp / "no_such_dir" / "K.npy")], "does not exist"),
        (k + [str(tmp / "K.txt")], "expected a file ending in"),
        (k + [out, "--get", "ntk,foo"], "--get"),
        (k + [out, "--get", "nngp,ntk"], "holds one array"),
        (k + [out, "--scheduler", "tcp://127.0.0.1:1"], "use --out K.zarr"),
        (k + [out, "--max-memory", "lots"], "max_memory"),
        (["fit", "--arch", arch, "--x", x, "--y", str(tmp / "x4.npy"), "--out", str(tmp / "m.npz")],
         r"--y: expected \(40,\)"),
        (["fit", "--arch", arch, "--x", x, "--y", str(p["y"]), "--out", str(tmp / "m.npy")], "ending in .npz"),
        (["predict", "--model", str(tmp / "notmodel.npz"), "--x", x, "--out", out], "not a model file"),
    ]


def test_bad_input_exit_2_one_line_nothing_written(files, capsys):
    tmp, p, _ = files
    for argv, message in _bad_cases(tmp, p):
        before = set(os.listdir(tmp))
        assert main(argv + ["--no-progress"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"widelimit {argv[0]}: error:") and err.count("\n") == 1, err
        assert "Traceback" not in err
        import re
        assert re.search(message, err), (message, err)
        assert set(os.listdir(tmp)) == before, argv     # nothing written, no temp files left


def test_unwritable_folder(files, capsys):
    tmp, p, _ = files
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK) and os.geteuid() == 0:
            target = "/proc/K.npy"           # root writes anywhere but in /proc
        else:
            target = str(ro / "K.npy")
        assert main(["kernel", "--arch", str(p["arch"]), "--x", str(p["x"]), "--out", target]) == 2
        assert "--out: cannot write into the folder" in capsys.readouterr().err
        assert not os.listdir(ro)
    finally:
        ro.chmod(0o700)


def test_help_on_every_subcommand_and_module_entry_point():
    top = run_cli("--help")
    assert top.returncode == 0 and all(c in top.stdout for c in ("kernel", "fit", "predict"))
    for cmd, flag in (("kernel", "--scheduler"), ("fit", "--diag-reg"), ("predict", "--model")):
        r = run_cli(cmd, "--help")
        assert r.returncode == 0 and flag in r.stdout, r.stderr
    r = run_cli("kernel", "--x", "x.npy")            # argparse usage error
    assert r.returncode == 2 and "required" in r.stderr and "Traceback" not in r.stderr


def test_subprocess_error_has_no_traceback(files):
    tmp, p, _ = files
    r = run_cli("kernel", "--arch", str(p["arch"]), "--x", str(tmp / "missing.npy"), "--out", str(tmp / "K.npy"))
    assert r.returncode == 2 and r.stderr.strip() == f"widelimit kernel: error: --x: no such file: {tmp / 'missing.npy'}"


def test_unreachable_scheduler_clear_error_within_timeout(files):
    """A closed loopback port: the connection fails within --scheduler-timeout (plus the
    interpreter's start), exit code 2, and no store is created."""
    import socket
    tmp, p, _ = files
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp / "K.zarr"
    r = run_cli("kernel", "--arch", str(p["arch"]), "--x", str(p["x"]), "--out", str(out),
                "--scheduler", f"tcp://127.0.0.1:{port}", "--scheduler-timeout", "2", timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"no Dask scheduler answered at tcp://127.0.0.1:{port} within 2 s" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_kernel_on_a_local_cluster_writes_the_same_store(files):
    """``--scheduler`` (a loopback LocalCluster's address) writes the store the same command
    writes without it, to the last bit."""
    pytest.importorskip("dask.distributed")
    from dask.distributed import LocalCluster
    tmp, p, _ = files
    common = ["kernel", "--arch", str(p["arch"]), "--x", str(p["x"]), "--block-size", "16",
              "-q", "--no-progress"]
    assert main(common + ["--out", str(tmp / "A.zarr")]) == 0
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        assert main(common + ["--out", str(tmp / "B.zarr"), "--scheduler",
                              cluster.scheduler_address]) == 0
    a, b = wl.open_kernel(tmp / "A.zarr"), wl.open_kernel(tmp / "B.zarr")
    assert b.complete and a.names == b.names
    for name in a.names:
        assert a.to_numpy(name).tobytes() == b.to_numpy(name).tobytes()
