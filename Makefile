# Two commands on a fresh machine: `make demo` and `make test`.
# OpenMP threads that sleep instead of spinning when idle: on a shared machine spinning
# threads made small kernels up to 100x slower (benchmarks/compare.py measured it).
export OMP_WAIT_POLICY ?= PASSIVE
.PHONY: demo test bench venv

venv:
	bash scripts/bootstrap.sh

demo: venv
	.venv/bin/python examples/demo.py

test: venv
	.venv/bin/python -m pytest -q -p no:cacheprovider

bench: venv
	.venv/bin/python benchmarks/kernels.py
