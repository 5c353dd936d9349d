# otel_crm — the targets humans and CI share. `make test` is what .ci/run calls.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export OTEL_CRM_CACHE ?= $(HOME)/.cache/otel-crm
export PATH := $(PATH):/usr/local/go/bin
PYTEST_FLAGS ?= -q

# Collector, Jaeger, telemetrygen, promtool, stack: build/run targets for the collector side.
include mk/collector.mk

.PHONY: help venv lint types unit integration e2e install-check test demo bench reliability clean readme-tables

help:
	@echo "make demo           the stack + the Flask example with traffic; prints queries that work, draws a trace"
	@echo "make test           what CI runs: lint types unit integration e2e alerts-test validate-configs install-check"
	@echo "make install-check  a fresh venv per Python 3.10-3.13, stock pip, no constraints, + opentelemetry-distro"
	@echo "make bench          benchmarks -> docs/performance.md"
	@echo "make reliability    faults, floods, bad settings, misuse against the real thing -> docs/reliability.md"
	@echo "make stack / stack-down / collector / jaeger / alerts-test / readme-tables"

# The venv is rebuilt only when the dependency spec changes.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[flask,django,sqlalchemy,requests,test]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check otel_crm tests examples bench deploy

types: venv
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest $(PYTEST_FLAGS) tests/unit

integration: venv collector
	$(PY) -m pytest $(PYTEST_FLAGS) tests/integration

e2e: venv collector jaeger
	$(PY) -m pytest $(PYTEST_FLAGS) tests/e2e

# What a new user's `pip install` resolves, with stock pip on Python 3.10-3.13 (~4-6 min; see the script).
install-check: venv
	bash scripts/install-check.sh

test: lint types unit integration e2e alerts-test validate-configs install-check

readme-tables: venv
	$(PY) scripts/readme_tables.py

bench: venv
	$(PY) bench/run_all.py

# Bounded scenarios (~5-8 min on 2 shared cores); writes the report, then fails if a scenario failed.
reliability: venv collector
	$(PY) -m tests.reliability.run --output docs/reliability.md

demo: venv collector jaeger
	bash scripts/demo.sh

clean:
	rm -rf build .mypy_cache .ruff_cache
