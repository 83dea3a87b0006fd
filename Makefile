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

.PHONY: install run run-cluster test test-unit test-integration test-e2e fuzz coverage lint format bench image compose-up compose-down clean

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

bench: install ## performance benchmarks → bench/results/ (one: SCENARIO=edge|pipeline|deepqueue|history|scale|cluster|day)
	$(PY) -m bench $(if $(SCENARIO),--scenario $(SCENARIO))

# The service image (deploy/image/). BASE_IMAGE=python:3.11-slim where a registry is reachable; without
# one, the default builds a Debian base here first (deploy/image/build-base.sh, needs debootstrap and root).
BASE_IMAGE ?= vibewave-base:bookworm
VIBEWAVE_IMAGE ?= vibewave:latest
COMPOSE ?= $(shell command -v docker-compose >/dev/null 2>&1 && echo docker-compose || echo docker compose)

image: ## the service image $(VIBEWAVE_IMAGE) (one for all four services and the ComfyUI simulator)
	$(if $(filter vibewave-base:bookworm,$(BASE_IMAGE)),deploy/image/build-base.sh $(BASE_IMAGE))
	docker build --network host --build-arg BASE_IMAGE=$(BASE_IMAGE) -f deploy/image/Dockerfile -t $(VIBEWAVE_IMAGE) .

compose-up: image ## the compose deployment's core profile (deploy/compose/; makes its .env on first use)
	@test -f deploy/compose/.env || python3 deploy/compose/make-env.py
	VIBEWAVE_IMAGE=$(VIBEWAVE_IMAGE) $(COMPOSE) -f deploy/compose/compose.yaml up -d

compose-down: ## stop and remove the compose deployment (its volumes stay: `down -v` removes them)
	$(COMPOSE) -f deploy/compose/compose.yaml down

clean:
	rm -rf $(VENV) $(TOOLS) .vibewave .pytest_cache .mypy_cache .ruff_cache htmlcov .coverage .coverage.*
