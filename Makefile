# microseg — developer entry points. Every target installs what it needs into local venvs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SPARK_STAMP := $(VENV)/.spark-installed

.PHONY: demo test bench bench-formats bench-ingest bench-netpol lint nca opa spark sysdeps clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The `spark` extra (PySpark; Java 17 must be installed) for `--engine spark` and its equality test.
$(SPARK_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,spark]'
	touch $(SPARK_STAMP)

spark: $(SPARK_STAMP)

# The independent NetworkPolicy evaluator lives in its own venv and is called as a subprocess.
# Idempotent: returns at once when the right version is installed.
nca:
	sh scripts/setup-nca.sh

# A real OPA engine (Go library bindings from PyPI) in its own venv, for the Rego back end's tests.
opa:
	sh scripts/setup-opa.sh

# Debian packages that cannot come from PyPI (nft, ip) for the nftables checks and the live twin.
sysdeps:
	sh scripts/install-system-deps.sh

demo: $(STAMP)
	$(VENV)/bin/microseg demo --out out/demo

# pytest-xdist: one worker per CPU (CI's 2 cores: 6 min instead of 11); TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= auto
test: $(STAMP) spark nca opa sysdeps
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/mypy

# Everything below: per-format ingest, end-to-end VPC ingest + mapping, NetworkPolicy evaluation vs NCA.
bench: $(STAMP) nca
	$(PY) benchmarks/bench_formats.py $(BENCH_ARGS)
	$(PY) benchmarks/bench_ingest.py $(INGEST_ARGS)
	$(PY) benchmarks/bench_netpol.py $(BENCH_NETPOL_ARGS)

# Per-format ingest against DuckDB's bare scan (1 M lines each); BENCH_ARGS="--lines 200000 --repeat 3".
bench-formats: $(STAMP)
	$(PY) benchmarks/bench_formats.py $(BENCH_ARGS)

# End to end on VPC logs (ingest + mapping, ~10 M lines) against the bare scan and pandas.
bench-ingest: $(STAMP)
	$(PY) benchmarks/bench_ingest.py $(INGEST_ARGS)

# 1,000 pods / 200 NetworkPolicies: microseg's evaluator against network-config-analyzer (several minutes).
bench-netpol: $(STAMP) nca
	$(PY) benchmarks/bench_netpol.py $(BENCH_NETPOL_ARGS)

clean:
	rm -rf $(VENV) .nca-venv .opa-venv out build *.egg-info benchmarks/data benchmarks/results
