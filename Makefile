# Octavia: `make help` lists the targets.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')
GENERATED := build/gen/octavia.pb

.DEFAULT_GOAL := help
.PHONY: help setup proto up down demo status logs test test-unit lint bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

setup: $(INSTALLED) $(GENERATED) ## Create .venv with every dependency and generate the API code

$(INSTALLED): pyproject.toml scripts/setup.sh tests/subtitle_validators/package-lock.json
	bash scripts/setup.sh
	@touch $@

$(GENERATED): $(PROTOS) $(INSTALLED)
	$(PY) scripts/proto.py

proto: $(INSTALLED) ## Regenerate the Python API package and Envoy's descriptor set from protos/
	$(PY) scripts/proto.py

up: setup ## Start Postgres, Valkey, NATS, Envoy and the seven services; wait until all are SERVING
	$(PY) scripts/stack.py up

down: ## Stop everything `make up` started
	@if [ -x $(PY) ]; then $(PY) scripts/stack.py down; fi

demo: setup ## Start the stack; turn a sample video into Portuguese subtitles, then dub it, with the `octavia` CLI
	bash scripts/demo.sh

status: ## Show what is running, with ports and health
	$(PY) scripts/stack.py status

logs: ## Follow the logs of the stack (SERVICE=auth for one)
	$(PY) scripts/stack.py logs $(SERVICE)

test: setup ## Run unit and integration tests (starts the stack if it is not up)
	$(PY) -m pytest

test-unit: setup ## Run only the tests that need no servers
	$(PY) -m pytest tests/unit

lint: setup ## Static checks: buf lint and format of the API, ruff lint and format, mypy
	$(VENV)/bin/buf lint protos
	$(VENV)/bin/buf format -d --exit-code protos
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup ## Run the benchmarks and print their figures (docs/performance.md)
	$(PY) -m bench.stack
	$(PY) -m bench.api
	$(PY) -m bench.transcribe
	$(PY) -m bench.billing
	$(PY) -m bench.dub
	$(PY) -m bench.validation

clean: down ## Remove generated code, the environment and local data
	rm -rf build var $(VENV)
