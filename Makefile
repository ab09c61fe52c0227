# Two commands on a fresh machine: `make demo` and `make test`.
.PHONY: demo test bench venv

venv:
	bash scripts/bootstrap.sh

demo: venv
	.venv/bin/python examples/demo.py

test: venv
	.venv/bin/python -m pytest -q -p no:cacheprovider

bench: venv
	.venv/bin/python benchmarks/kernels.py
