# StormAlert: `make run` starts everything on the simulator; `make test` passes the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3

.PHONY: install run test test-fast bench lint proto clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/stormalert up --feed sim

test: install
	$(PY) -m pytest -p no:valkey -q tests

bench: install
	$(PY) -m tests.bench

lint: install
	$(VENV)/bin/ruff check proto ingest engine notify web deploy tests
	$(VENV)/bin/mypy proto engine
	$(VENV)/bin/lint-imports

proto: install
	$(PY) -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto proto/MarketDataFeedV3.proto

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
