# The two front-door commands: `make demo` and `make test`.
.PHONY: setup airflow demo test test-fast lint benchmark

setup:
	@bash scripts/bootstrap.sh

# the Airflow environment (.venv-airflow): Airflow 2.10.5, PostgreSQL (pgserver), petpark
airflow:
	@bash scripts/bootstrap.sh airflow

demo: setup
	.venv/bin/petpark run

test: setup airflow lint
	PETPARK_REQUIRE_AIRFLOW=1 .venv/bin/python -m pytest tests

# one style for the whole tree (ruff.toml)
lint: setup
	.venv/bin/ruff check .

test-fast: setup
	.venv/bin/python -m pytest tests -m "not e2e"

benchmark: setup
	.venv/bin/python benchmarks/pipeline_benchmark.py
