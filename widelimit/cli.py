"""The ``widelimit`` command: kernels and kernel regression from files.

::

    widelimit kernel  --arch arch.json --x x.npy [--x2 x2.npy] --out K.npy|K.npz|K.csv|K.zarr
    widelimit fit     --arch arch.json --x x.npy --y y.npy --out model.npz [--kernel ntk]
    widelimit predict --model model.npz --x x_test.npy --out y_test.npy

``--arch`` is an architecture spec (``net.to_json()``, :mod:`widelimit.layers.spec`).
``kernel`` to ``.zarr`` runs :func:`widelimit.compute_kernel` (out-of-core, resumable: run
the same command again after an interruption; ``--scheduler ADDR`` spreads the blocks
over a Dask cluster).  ``fit`` solves the kernel ridge regression of the infinite-width
network trained to convergence, ``f(x) = K(x, X) (K(X, X) + r I)^-1 (y - mean y) + mean y``
(Jacot et al. 2018 for the NTK; the NNGP posterior mean, Lee et al. 2018), with
``r = diag_reg * mean(diag K)`` as neural-tangents' ``diag_reg``; the model file holds the
spec, the training inputs and the solution.  User errors (missing files, shapes, specs,
unwritable outputs, an unreachable scheduler) print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional, Sequence

import numpy as np

from widelimit._cli_io import (CLIError, as_inputs, check_writable, load_arch, load_array,
                               load_model, save_arrays, save_model)

KERNELS = ("nngp", "ntk")
OUT_SUFFIXES = (".npy", ".npz", ".csv", ".zarr")


def _parse_get(text: Optional[str], out_suffix: str) -> tuple[str, ...]:
    if text is None:
        return ("ntk",) if out_suffix in (".npy", ".csv") else KERNELS
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in KERNELS]
    if not names or bad or len(set(names)) != len(names):
        raise CLIError(f"--get: expected a comma-separated subset of {','.join(KERNELS)}, got {text!r}.")
    return names


def _kernel_callable(net: Any, args: argparse.Namespace):
    """``f(x1, x2, get) -> {name: array}``: ``widelimit.batch`` when available (blocks,
    budget, progress bar), else ``net.kernel_fn`` in one call."""
    import widelimit as wl
    batch = getattr(wl, "batch", None)
    if batch is not None:
        fn = batch(net.kernel_fn, block_size=args.block_size, max_memory=args.max_memory,
                   progress=args.progress)
    else:
        def fn(x1, x2=None, get=None):
            return net.kernel_fn(x1, x2, get=get, max_memory=args.max_memory)

    def run(x1, x2, names):
        out = fn(x1, x2, get=tuple(names))
        return {n: np.asarray(v) for n, v in zip(names, out)}
    return run


def _inputs(args: argparse.Namespace) -> tuple[np.ndarray, Optional[np.ndarray]]:
    x = as_inputs(load_array(args.x, "--x"), "--x", args.dtype)
    x2 = None
    if getattr(args, "x2", None):
        x2 = as_inputs(load_array(args.x2, "--x2"), "--x2", args.dtype)
        if x2.shape[1:] != x.shape[1:]:
            raise CLIError(f"--x2: examples of shape {x2.shape[1:]} do not match --x's {x.shape[1:]} "
                           f"(files {args.x2}: {x2.shape}, {args.x}: {x.shape}).")
    return x, x2


def _connect(address: str, timeout: float):
    from widelimit.scale.distributed import connect
    try:
        return connect(address, timeout=timeout)
    except ImportError:
        raise CLIError("--scheduler needs dask.distributed: pip install 'dask[distributed]'.") from None
    except (ConnectionError, TypeError, ValueError) as e:
        raise CLIError(f"--scheduler: {e}") from None


def cmd_kernel(args: argparse.Namespace) -> int:
    suffix = _out_suffix(args.out)
    names = _parse_get(args.get, suffix)
    if args.scheduler and suffix != ".zarr":
        raise CLIError("--scheduler spreads the blocks of a .zarr store over a cluster; use "
                       "--out K.zarr.")
    if args.upper_only and suffix != ".zarr":
        raise CLIError("--upper-only is a layout of .zarr stores; use --out K.zarr.")
    net = load_arch(args.arch)
    x, x2 = _inputs(args)
    out = check_writable(args.out)
    if suffix == ".zarr":
        import widelimit as wl
        compute_kernel = getattr(wl, "compute_kernel", None)
        client = _connect(args.scheduler, args.scheduler_timeout) if args.scheduler else None
        if compute_kernel is None:
            raise CLIError("--out .zarr needs widelimit.compute_kernel, which this installation "
                           "of widelimit does not have; write .npy / .npz instead.")
        try:
            store = compute_kernel(net.kernel_fn, x, x2, out=str(out), get=names,
                                   block_size=args.block_size, max_memory=args.max_memory,
                                   client=client, progress=args.progress, spec=net.to_json(),
                                   overwrite=args.overwrite,
                                   mirror=not args.upper_only)
        finally:
            if client is not None:
                client.close()
        _say(args, f"wrote {out}: {', '.join(names)} of shape {tuple(store.shape)}")
        return 0
    if out.exists() and not args.overwrite:
        raise CLIError(f"--out: {out} exists; pass --overwrite to replace it.")
    kernels = _kernel_callable(net, args)(x, x2, names)
    save_arrays(out, kernels)
    _say(args, f"wrote {out}: {', '.join(names)} of shape {next(iter(kernels.values())).shape}")
    return 0


def _out_suffix(path: str, allowed: Sequence[str] = OUT_SUFFIXES) -> str:
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix not in allowed:
        raise CLIError(f"--out: expected a file ending in {' / '.join(allowed)}, got {path}.")
    return suffix


def _solve(k: np.ndarray, y: np.ndarray, diag_reg: float) -> np.ndarray:
    import torch
    kt = torch.as_tensor(k, dtype=torch.float64)
    reg = diag_reg * float(torch.diagonal(kt).mean())
    chol, info = torch.linalg.cholesky_ex(kt + reg * torch.eye(kt.shape[0], dtype=torch.float64))
    if int(info) != 0:
        raise CLIError(f"the training kernel plus {reg:.3g} I is not positive definite; increase "
                       f"--diag-reg (now {diag_reg:g}).")
    return torch.cholesky_solve(torch.as_tensor(y, dtype=torch.float64), chol).numpy()


def cmd_fit(args: argparse.Namespace) -> int:
    _out_suffix(args.out, (".npz",))
    if not args.diag_reg >= 0:
        raise CLIError(f"--diag-reg must be >= 0, got {args.diag_reg}.")
    net = load_arch(args.arch)
    x, _ = _inputs(args)
    y = load_array(args.y, "--y")
    if y.shape[0] != x.shape[0] or y.ndim > 2:
        raise CLIError(f"--y: expected ({x.shape[0]},) or ({x.shape[0]}, k) targets for the "
                       f"{x.shape[0]} examples of --x, got shape {y.shape}.")
    out = check_writable(args.out)
    y_1d = y.ndim == 1
    y2 = y.reshape(y.shape[0], -1).astype(np.float64)
    y_mean = y2.mean(0) if args.center else np.zeros(y2.shape[1])
    k = _kernel_callable(net, args)(x, None, (args.kernel,))[args.kernel]
    alpha = _solve(k, y2 - y_mean, args.diag_reg)
    rmse = float(np.sqrt(np.mean((k @ alpha + y_mean - y2) ** 2)))
    save_model(out, spec=net.to_json(), kernel=args.kernel, x_train=x, alpha=alpha,
               y_mean=y_mean, diag_reg=args.diag_reg, y_1d=y_1d)
    _say(args, f"wrote {out}: {args.kernel} regression on {x.shape[0]} examples, "
               f"training RMSE {rmse:.4g}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    _out_suffix(args.out, (".npy", ".csv"))
    model = load_model(args.model)
    net = load_arch(model["spec"])
    x = as_inputs(load_array(args.x, "--x"), "--x", None).astype(model["x_train"].dtype)
    if x.shape[1:] != model["x_train"].shape[1:]:
        raise CLIError(f"--x: examples of shape {x.shape[1:]}, but the model was fitted on "
                       f"{model['x_train'].shape[1:]}.")
    out = check_writable(args.out)
    kernel = str(model["kernel"])
    k = _kernel_callable(net, args)(x, model["x_train"], (kernel,))[kernel]
    pred = k @ model["alpha"] + model["y_mean"]
    save_arrays(out, {"prediction": pred[:, 0] if model["y_1d"] else pred})
    _say(args, f"wrote {out}: predictions of shape {pred.shape}")
    return 0


def _say(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def _common(p: argparse.ArgumentParser, arch: bool = True) -> None:
    if arch:
        p.add_argument("--arch", required=True, metavar="ARCH.json",
                       help="architecture spec: a file written from net.to_json(), or the JSON itself")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="memory budget of the kernel computation, e.g. 4GB (default: half the available memory)")
    p.add_argument("--block-size", type=_positive_int, default=None, metavar="N",
                   help="rows and columns per kernel block (default: chosen from the budget)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show progress bars on stderr (default: on)")
    p.add_argument("--quiet", "-q", action="store_true", help="no summary line")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``widelimit`` command (subcommands kernel, fit, predict)."""
    parser = argparse.ArgumentParser(
        prog="widelimit", description="Infinite-width NNGP / NTK kernels and kernel regression "
        "from .npy / .csv files. Architectures are JSON specs: net.to_json().",
        epilog="'widelimit COMMAND --help' describes each command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    k = sub.add_parser("kernel", help="compute NNGP / NTK kernels of an architecture",
                       description="Compute the kernels between the examples of --x (and --x2). "
                       ".zarr output is out-of-core and resumable (run the command again after an "
                       "interruption) and can use a Dask cluster (--scheduler).")
    k.add_argument("--x", required=True, metavar="X.npy", help="inputs (N, ...) as .npy or .csv")
    k.add_argument("--x2", default=None, metavar="X2.npy", help="second inputs (default: --x against itself)")
    k.add_argument("--out", required=True, metavar="K.zarr",
                   help="output: .zarr (store), .npz (one array per kernel), .npy / .csv (one kernel)")
    k.add_argument("--get", default=None, metavar="NAMES",
                   help="comma-separated kernels, nngp,ntk (default: ntk for .npy / .csv, both otherwise)")
    k.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="compute in this dtype (default: the inputs')")
    k.add_argument("--scheduler", default=None, metavar="ADDR",
                   help="Dask scheduler address, e.g. tcp://host:8786 (.zarr output only)")
    k.add_argument("--scheduler-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the scheduler (default 10)")
    k.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (a .zarr store is otherwise resumed)")
    k.add_argument("--upper-only", action="store_true",
                   help="store only the upper block triangle of a kernel of --x with itself "
                        "(.zarr: half the disk and writes; read it with widelimit.open_kernel)")
    _common(k)
    k.set_defaults(run=cmd_kernel)

    f = sub.add_parser("fit", help="fit NTK / NNGP kernel regression, save a model file",
                       description="Kernel ridge regression with the NTK (the infinite network "
                       "trained to convergence by gradient descent on MSE) or the NNGP (posterior "
                       "mean); saves the spec, training inputs and solution to --out (.npz).")
    f.add_argument("--x", required=True, metavar="X.npy", help="training inputs (N, ...) as .npy or .csv")
    f.add_argument("--y", required=True, metavar="Y.npy", help="targets (N,) or (N, k) as .npy or .csv")
    f.add_argument("--out", required=True, metavar="MODEL.npz", help="model file to write")
    f.add_argument("--kernel", choices=KERNELS, default="ntk", help="which kernel (default ntk)")
    f.add_argument("--diag-reg", type=float, default=1e-6, metavar="R",
                   help="ridge, relative to the mean of the kernel's diagonal (default 1e-6)")
    f.add_argument("--center", action=argparse.BooleanOptionalAction, default=True,
                   help="subtract the targets' mean before the solve (default: on)")
    f.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="compute the kernel in this dtype (default: the inputs')")
    _common(f)
    f.set_defaults(run=cmd_fit)

    p = sub.add_parser("predict", help="predict with a model file from 'widelimit fit'",
                       description="Predictions of a fitted kernel regression at new inputs.")
    p.add_argument("--model", required=True, metavar="MODEL.npz", help="written by 'widelimit fit'")
    p.add_argument("--x", required=True, metavar="X.npy", help="test inputs (M, ...) as .npy or .csv")
    p.add_argument("--out", required=True, metavar="Y.npy", help="predictions, .npy or .csv")
    _common(p, arch=False)
    p.set_defaults(run=cmd_predict)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``widelimit`` command with ``argv`` (default ``sys.argv[1:]``); returns the
    exit code: 0 on success, 2 for usage and input errors (one line on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except CLIError as e:
        msg = str(e)
    except (ValueError, OSError, MemoryError) as e:     # bad input the library refused
        msg = f"{type(e).__name__}: {e}"
    except KeyboardInterrupt:
        print("widelimit: interrupted", file=sys.stderr)
        return 130
    print(f"widelimit {args.command}: error: {msg}", file=sys.stderr)
    return 2


def spec_file(net: Any, path: str) -> None:
    """Write ``net``'s spec to ``path`` (what ``--arch`` reads)."""
    with open(path, "w") as fh:
        json.dump(net.to_dict(), fh, indent=2)
