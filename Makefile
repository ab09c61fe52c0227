# Two commands on a fresh machine: `make demo` and `make test`.
# OpenMP threads that sleep instead of spinning when idle: on a shared machine spinning
# threads made small kernels up to 100x slower (benchmarks/compare.py measured it).
export OMP_WAIT_POLICY ?= PASSIVE
.PHONY: demo test pytest docs typecheck wheel-check bench venv

venv:
	bash scripts/bootstrap.sh

demo: venv
	.venv/bin/python examples/demo.py

# what CI runs (.ci/run): the strict docs build, mypy, the wheel check (each timed), then the
# test suite (last, so that its summary line closes the output)
test: venv
	@for step in docs typecheck wheel-check; do start=$$(date +%s); \
	    $(MAKE) --no-print-directory $$step || exit 1; \
	    echo "== make $$step: $$(( $$(date +%s) - start )) s"; done
	$(MAKE) --no-print-directory pytest

pytest: venv
	.venv/bin/python -m pytest -q -p no:cacheprovider

# the API reference (mkdocs.yml) into site/; warnings are errors
docs: venv
	NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --strict -q

typecheck: venv
	.venv/bin/python -m mypy widelimit

# build the wheel, install it non-editable in a fresh venv, import it outside the tree
wheel-check: venv
	bash scripts/check_wheel.sh

bench: venv
	.venv/bin/python benchmarks/kernels.py
