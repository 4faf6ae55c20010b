# The two front-door commands: `make demo` and `make test`.
.PHONY: setup airflow system-packages demo test test-fast lint benchmark

setup:
	@bash scripts/bootstrap.sh

# the Airflow environment (.venv-airflow): Airflow 2.10.5, PostgreSQL (pgserver), petpark
airflow:
	@bash scripts/bootstrap.sh airflow

# Debian's prometheus, prometheus-alertmanager and chromium, for the tests that run them (as root:
# apt-get, skipped when installed; elsewhere it names what is missing)
system-packages:
	@bash scripts/system_packages.sh

demo: setup
	.venv/bin/petpark run

test: setup airflow system-packages lint
	PETPARK_REQUIRE_AIRFLOW=1 PETPARK_REQUIRE_SYSTEM_PACKAGES=1 PETPARK_REQUIRE_SHARED=1 .venv/bin/python -m pytest tests

# one style for the whole tree (ruff.toml)
lint: setup
	.venv/bin/ruff check .

test-fast: setup
	.venv/bin/python -m pytest tests -m "not e2e"

benchmark: setup
	.venv/bin/python benchmarks/pipeline_benchmark.py
