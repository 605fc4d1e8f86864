# One task runner; .ci/run calls these targets too.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SR     := $(BIN)/stream-rec
PYTEST_ARGS ?=

.PHONY: help setup demo test test-unit test-integration lint fmt bench broker-up broker-down

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed  ## install Python deps, fetch Kafka jars and MovieLens-100K
	$(SR) setup

demo: setup  ## end-to-end demo: local broker, worker, MovieLens replay, live recommendations
	$(SR) demo

test: setup  ## all tests; starts the local broker for the integration tiers and stops it
	$(SR) broker up
	CI=$${CI:-false} $(BIN)/pytest $(PYTEST_ARGS); rc=$$?; $(SR) broker down; exit $$rc

test-unit: setup  ## unit tests only (no broker)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: setup  ## ruff, ruff format --check, mypy
	$(BIN)/ruff check stream_rec tests
	$(BIN)/ruff format --check stream_rec tests
	$(BIN)/mypy

fmt: setup  ## format the code
	$(BIN)/ruff check --fix stream_rec tests
	$(BIN)/ruff format stream_rec tests

bench: setup  ## benchmarks (print figures, write JSON under bench/)
	$(SR) broker up
	$(SR) bench pipeline; $(SR) bench model

broker-up: setup  ## start the local Kafka broker
	$(SR) broker up

broker-down:  ## stop the local Kafka broker
	$(SR) broker down
