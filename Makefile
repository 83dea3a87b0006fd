# Vibewave: `make run` starts everything locally, `make test` runs the whole suite.
# Only Python 3.11+ and make are needed: uv (pinned) is installed into .tools/, the project into .venv/.

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_PYTHON := $(shell command -v $(PYTHON))
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy

PYPROJECTS := pyproject.toml $(wildcard contracts/pyproject.toml runtime/pyproject.toml services/*/pyproject.toml simulators/*/pyproject.toml deploy/*/pyproject.toml)

.PHONY: install run run-cluster test test-unit test-integration test-e2e fuzz coverage lint format bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) uv.lock $(PYPROJECTS)
	$(UV) sync --locked
	@touch $@

install: $(VENV)/.synced ## install the project and its dev tools into .venv

run: install ## NATS + all services + simulated pods; API on :8000 (API_PORT); Ctrl-C stops
	$(PY) -m vibewave.devstack

run-cluster: install ## the same on a local 3-node NATS cluster (R3 streams, KV, object store)
	$(PY) -m vibewave.devstack.nats_cluster

test: install ## the whole suite: unit, integration (real NATS), end-to-end (processes over HTTP)
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest -m unit

test-integration: install
	$(PY) -m pytest -m integration

test-e2e: install
	$(PY) -m pytest -m e2e

fuzz: install ## schemathesis over every operation of the live OpenAPI document (bounded: FUZZ_TIME seconds)
	$(PY) -m tests.fuzz.schemathesis_run --max-time $(or $(FUZZ_TIME),240)

coverage: install ## the whole suite with a coverage report (terminal + htmlcov/)
	$(PY) -m pytest --cov --cov-report=term --cov-report=html

lint: install ## ruff (lint + format check) and mypy (strict)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy contracts/src runtime/src services simulators deploy

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install ## performance benchmarks → bench/results/ (one: SCENARIO=edge|pipeline|deepqueue|history|scale|cluster)
	$(PY) -m bench $(if $(SCENARIO),--scenario $(SCENARIO))

clean:
	rm -rf $(VENV) $(TOOLS) .vibewave .pytest_cache .mypy_cache .ruff_cache htmlcov .coverage .coverage.*
