# fusionrack developer commands. `make test` is the one CI runs (.ci/run) and the README shows.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install system-deps lint test up bench protos dashboards kubernetes clean

help:
	@echo "make up            bring up an emulated gb200-nvl72 rack (Ctrl-C stops it; RACK=name for another)"
	@echo "make test          install what is missing (venv, package, mosquitto, prometheus, etcd, Go), lint, run every test"
	@echo "make bench         run the benchmarks with full figures"
	@echo "make protos        regenerate the gRPC stubs from proto/fusionrack/v1/*.proto"
	@echo "make dashboards    regenerate deploy/grafana/dashboards/*.json from scripts/gen_dashboards.py"
	@echo "make kubernetes    regenerate deploy/kubernetes/ (a rack, a fleet) from scripts/gen_kubernetes.py"
	@echo "make install       create $(VENV) and install fusionrack with its test tools"
	@echo "make clean         remove $(VENV) and caches"

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV)

# Reinstall whenever pyproject.toml changes (new dependency, new entry point). One line of progress,
# then pip speaks only of errors. The filter hides the notice setuptools gives on every editable
# install of a package-dir layout like ours ("Editable installation. Please be careful with folders
# ... with the same name as your package"), by its text, and nothing else.
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "installing fusionrack and its test tools into $(VENV) ..."
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(STAMP)

system-deps:
	@scripts/install-system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) system-deps lint
	$(BIN)/pytest

RACK ?= gb200-nvl72
# With Prometheus installed, the rack comes with the dashboards' data source.
PROMETHEUS_FLAG = $(if $(shell command -v prometheus),--prometheus)
up: $(STAMP)
	@scripts/install-system-deps.sh --only mosquitto
	$(BIN)/fusionctl rack up --manifest $(RACK) $(PROMETHEUS_FLAG)

bench: $(STAMP)
	$(BIN)/python -m bench.core
	$(BIN)/python -m bench.metrics
	$(BIN)/python -m bench.agents
	$(BIN)/python -m bench.controller
	$(BIN)/python -m bench.fleet
	$(BIN)/python -m bench.failover
	$(BIN)/python -m bench.startup

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

dashboards: $(STAMP)
	$(BIN)/python scripts/gen_dashboards.py

kubernetes: $(STAMP)
	$(BIN)/python scripts/gen_kubernetes.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
