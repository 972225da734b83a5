# CRUCIBLE-bench: the two set-up commands of the README.
#   make reproduce   create .venv, install the pinned dependencies, run the default DAG (tiny profile)
#   make test        same venv; ruff, snakemake --lint, pytest (includes the end-to-end smoke DAG)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
# one thread pool per process on this 2-core default; snakemake gives each job its own threads
export OMP_NUM_THREADS ?= 2

.PHONY: reproduce test lint install paper clean-results

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

reproduce: $(STAMP)
	snakemake --cores all

lint: $(STAMP)
	ruff check src tests
	snakemake --lint --configfile config/smoke.yaml

test: lint
	pytest

clean-results:
	rm -rf results logs .snakemake/incomplete
