#!/usr/bin/env bash
# Build widelimit's wheel and check a non-editable install of it, away from the source tree:
# import, compute a kernel, run the `widelimit` command.  `make wheel-check`; CI runs it.
#
# The fresh venv reuses the project venv's packages (the pinned CPU torch 2.13.0, numpy,
# scipy) through a .pth line naming .venv's site-packages, instead of letting pip pull a
# CUDA torch; that directory's own .pth files (the editable install of widelimit) are not
# processed, and the new venv's site-packages comes first on sys.path anyway.  The wheel is
# installed non-editable with --no-deps (checked: widelimit.__file__ lies in the new venv).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/widelimit-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

"$PY" -m pip wheel -q --no-deps . -w "$WORK/dist" 2>&1 | grep -v "^WARNING: Location" || true
WHEEL=$(ls "$WORK"/dist/widelimit-*.whl)
echo "built $(basename "$WHEEL")"
# the wheel holds the package, its type marker and no tests
FILES=$("$PY" -c "import sys, zipfile; print('\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))" "$WHEEL")
grep -qx "widelimit/py.typed" <<< "$FILES" || { echo "FAIL: py.typed missing from the wheel"; exit 1; }
if grep -q "^tests/" <<< "$FILES"; then echo "FAIL: tests/ inside the wheel"; exit 1; fi

"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
    "$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_project_deps.pth"
"$VPY" -m pip install -q --no-deps --no-index "$WHEEL" 2>&1 | grep -v "^WARNING: Location" || true

cd "$WORK"          # outside the source tree: nothing can come from $ROOT
env -u PYTHONPATH "$VPY" - "$WORK/venv" <<'PY'
import sys
import torch
import widelimit as wl
from widelimit import layers as L
venv = sys.argv[1]
assert wl.__file__.startswith(venv), f"imported {wl.__file__}, not the installed wheel"
x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
k = L.serial(L.Dense(8), L.Relu(), L.Dense(1)).kernel_fn(x, get="ntk")
assert k.shape == (5, 5) and torch.allclose(k, k.T)
print(f"ok: widelimit {wl.__version__} from {wl.__file__}; torch {torch.__version__}; NTK {tuple(k.shape)}")
PY

# the console script, from the installed wheel: --help on every subcommand, then a kernel
# written to .npy and to a resumable .zarr store, compared with the library's own call
WL="$WORK/venv/bin/widelimit"
for sub in "" kernel fit predict; do
    env -u PYTHONPATH "$WL" $sub --help > "$WORK/help.txt" || { echo "FAIL: widelimit $sub --help"; exit 1; }
done
env -u PYTHONPATH "$VPY" - "$WORK" <<'PY'
import sys
import numpy as np
import torch
from widelimit import layers as L
work = sys.argv[1]
net = L.serial(L.Dense(16), L.Relu(), L.Dense(16), L.Relu(), L.Dense(1))
open(f"{work}/arch.json", "w").write(net.to_json())
x = np.random.default_rng(0).standard_normal((37, 5))
np.save(f"{work}/x.npy", x)
np.save(f"{work}/y.npy", np.sin(x[:, :1]))
np.save(f"{work}/k_ref.npy", net.kernel_fn(torch.as_tensor(x), get="ntk").numpy())
PY
env -u PYTHONPATH "$WL" kernel --arch "$WORK/arch.json" --x "$WORK/x.npy" --out "$WORK/K.npy" --get ntk --no-progress -q
env -u PYTHONPATH "$WL" fit --arch "$WORK/arch.json" --x "$WORK/x.npy" --y "$WORK/y.npy" \
    --out "$WORK/model.npz" --kernel ntk --diag-reg 1e-3 --no-progress -q
env -u PYTHONPATH "$WL" predict --model "$WORK/model.npz" --x "$WORK/x.npy" --out "$WORK/pred.npy" \
    --no-progress -q
env -u PYTHONPATH "$WL" kernel --arch "$WORK/arch.json" --x "$WORK/x.npy" --out "$WORK/K.zarr" \
    --get ntk --block-size 16 --no-progress -q
env -u PYTHONPATH "$VPY" - "$WORK" <<'PY'
import sys
import numpy as np
import widelimit as wl
work = sys.argv[1]
ref = np.load(f"{work}/k_ref.npy")
k_npy = np.load(f"{work}/K.npy")
k_zarr = wl.open_kernel(f"{work}/K.zarr").to_numpy("ntk")
assert np.array_equal(k_npy, ref), "widelimit kernel --out K.npy differs from net.kernel_fn"
assert np.allclose(k_zarr, ref, rtol=1e-12, atol=0), "widelimit kernel --out K.zarr differs"
y, pred = np.sin(np.load(f"{work}/x.npy")[:, :1]), np.load(f"{work}/pred.npy")
assert pred.shape == y.shape and np.isfinite(pred).all(), pred.shape
assert np.abs(pred - y).max() < 0.1 * np.abs(y).max(), "fit/predict does not fit its training set"
print(f"ok: the widelimit command (--help on every subcommand; kernel to .npy and .zarr, fit + predict, "
      f"{ref.shape}) from the installed wheel")
PY
echo "wheel check passed"
