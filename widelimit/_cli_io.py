"""Files of the ``widelimit`` command: arrays (.npy / .csv / .npz), architecture specs,
model files; every write goes to a temporary file in the target folder and is moved into
place (``os.replace``), so a failed or killed command leaves nothing half-written."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

MODEL_FORMAT = "widelimit-model"
MODEL_VERSION = 1


class CLIError(Exception):
    """A user error of the command line: printed without a traceback, exit code 2."""


def load_array(path: str, flag: str) -> np.ndarray:
    """A float array (N, ...) from a .npy file or a numeric .csv (one row per example; one
    header line is skipped when it is not numeric)."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{flag}: no such file: {path}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        elif suffix == ".csv":
            try:
                a = np.loadtxt(p, delimiter=",", ndmin=2)
            except ValueError:
                a = np.loadtxt(p, delimiter=",", ndmin=2, skiprows=1)
        else:
            raise CLIError(f"{flag}: expected a .npy or .csv file, got {path}")
    except CLIError:
        raise
    except (ValueError, OSError) as e:
        raise CLIError(f"{flag}: cannot read {path}: {e}") from None
    if a.dtype.kind not in "biuf":
        raise CLIError(f"{flag}: {path} holds {a.dtype} values, expected numbers.")
    if a.ndim < 1 or a.shape[0] < 1:
        raise CLIError(f"{flag}: {path} has shape {a.shape}; expected (N, ...) with N >= 1.")
    if not np.isfinite(a).all():
        raise CLIError(f"{flag}: {path} contains NaN or infinite values.")
    return a if a.dtype.kind == "f" else a.astype(np.float64)


def as_inputs(a: np.ndarray, flag: str, dtype: str | None) -> np.ndarray:
    """Inputs (N, d, ...) for a kernel: 1-D arrays are N one-dimensional examples."""
    if a.ndim == 1:
        a = a[:, None]
    return a.astype(dtype) if dtype else a


def load_arch(text: str):
    """A layer from ``--arch``: a JSON file (:meth:`Layer.to_json`), or the JSON itself."""
    from widelimit.layers import SpecError, from_json
    source = text
    if not text.lstrip().startswith("{"):
        p = Path(text)
        if not p.is_file():
            raise CLIError(f"--arch: no such file: {text}")
        try:
            source = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise CLIError(f"--arch: cannot read {text}: {e}") from None
    try:
        return from_json(source)
    except SpecError as e:
        raise CLIError(f"--arch: {e}") from None


def check_writable(path: str, flag: str = "--out") -> Path:
    """The output path, after checking that its folder exists and can be written."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise CLIError(f"{flag}: the folder {parent} does not exist.")
    try:        # a real write: os.access says yes to root, and on read-only file systems
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise CLIError(f"{flag}: cannot write into the folder {parent} ({e.strerror or e}).") from None
    if p.is_dir() and p.suffix.lower() != ".zarr":
        raise CLIError(f"{flag}: {path} is a folder.")
    return p


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Any]:
    """A binary file object that becomes ``path`` only when the block succeeds."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """One array to .npy / .csv, or several (by name) to .npz."""
    suffix = path.suffix.lower()
    if suffix in (".npy", ".csv") and len(arrays) != 1:
        raise CLIError(f"--out: a {suffix} file holds one array; got {tuple(arrays)} (choose one "
                       f"with --get, or write .npz / .zarr).")
    with atomic_file(path) as f:
        if suffix == ".npz":
            np.savez(f, **arrays)
        elif suffix == ".csv":
            a = next(iter(arrays.values()))
            np.savetxt(f, a.reshape(a.shape[0], -1) if a.ndim != 1 else a, delimiter=",", fmt="%.17g")
        else:
            np.save(f, next(iter(arrays.values())), allow_pickle=False)


def save_model(path: Path, *, spec: str, kernel: str, x_train: np.ndarray, alpha: np.ndarray,
               y_mean: np.ndarray, diag_reg: float, y_1d: bool) -> None:
    """The fitted regression: architecture spec, training inputs and the solve's state."""
    meta = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "kernel": kernel,
            "diag_reg": diag_reg, "y_1d": y_1d}
    with atomic_file(path) as f:
        np.savez(f, meta=np.array(json.dumps(meta)), spec=np.array(spec), x_train=x_train,
                 alpha=alpha, y_mean=y_mean)


def load_model(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--model: no such file: {path}")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError) as e:
        raise CLIError(f"--model: {path} is not a model file written by `widelimit fit` ({e}).") from None
    if meta.get("format") != MODEL_FORMAT or meta.get("version") != MODEL_VERSION:
        raise CLIError(f"--model: {path} has format {meta.get('format')!r} version "
                       f"{meta.get('version')!r}; expected {MODEL_FORMAT!r} version {MODEL_VERSION}.")
    missing = {"spec", "x_train", "alpha", "y_mean"} - set(data)
    if missing:
        raise CLIError(f"--model: {path} lacks {sorted(missing)}.")
    return {**meta, **data, "spec": str(data["spec"])}
