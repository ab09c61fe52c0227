#!/usr/bin/env bash
# Create .venv (if missing) and install widelimit with its test/demo/fast/docs extras.
# torch is pinned to the CPU wheel that lies on this machine's disk; an
# unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.widelimit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -m pip install -q -e ".[test,demo,fast,docs]" 2>&1 | grep -v "^WARNING: Location" || true
    # mup (cross-check of our muP) declares torchvision, which would pull a CUDA torch:
    # install it without dependencies; it needs only torch, numpy, pandas-free core.
    .venv/bin/python -m pip install -q --no-deps "mup==1.0.0" 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -c "import torch, widelimit; print('torch', torch.__version__, '| widelimit', widelimit.__version__)"
    touch "$stamp"
fi
