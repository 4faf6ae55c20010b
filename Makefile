# The two front-door commands: `make demo` and `make test`.
.PHONY: setup demo test test-fast benchmark

setup:
	@bash scripts/bootstrap.sh

demo: setup
	.venv/bin/petpark run

test: setup
	.venv/bin/python -m pytest tests

test-fast: setup
	.venv/bin/python -m pytest tests -m "not e2e"

benchmark: setup
	.venv/bin/python benchmarks/pipeline_benchmark.py
