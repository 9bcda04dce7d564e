# recops: `make run` sets up and runs the whole pipeline; `make test` sets up and runs the tests.
SHELL := /bin/bash
PY := .venv/bin/python
# A local copy of the MovieLens folders, when the machine has one (no download needed).
DATA_ROOT ?= $(firstword $(wildcard ../shared/data))
export GX_ANALYTICS_ENABLED=false BENTOML_DO_NOT_TRACK=true FEAST_USAGE=False \
       RAY_USAGE_STATS_ENABLED=0 SCARF_ANALYTICS=false DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 \
       FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
ifneq ($(DATA_ROOT),)
export RECOPS_DATA__ROOT ?= $(abspath $(DATA_ROOT))
endif

.PHONY: setup run test test-fast lint bench lock services clean test-deps up down status
setup:
	@scripts/bootstrap.sh

run: setup
	$(PY) -m recops.cli run $(ARGS)

# The platform: Airflow (UI, scheduler, dag-processor, triggerer) and the champion's service.
up: setup
	$(PY) -m recops.cli up $(ARGS)

status: setup
	$(PY) -m recops.cli status

down: setup
	$(PY) -m recops.cli down

test: setup services test-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not integration and not slow" $(PYTEST_ARGS)

# ruff, then mypy over pyproject.toml's [tool.mypy] files (strict on every package). CI runs it.
lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

services:
	@scripts/services.sh

test-deps:
	@scripts/test-deps.sh

lock:
	UV_FIND_LINKS=/opt/wheels uv pip compile requirements.in --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -o requirements.lock

clean:
	rm -rf .recops
