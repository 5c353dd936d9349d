# Collector side of otel_crm: build the OCB distribution, Jaeger v2, telemetrygen
# and promtool into build/ (from a hash-keyed cache outside the clone), validate
# the shipped configs, unit-test the alert rules, run the local stack.
#
# Included by the top-level Makefile; also works standalone:
#   make -f mk/collector.mk collector
#
# Binaries are cached in $(OTEL_CRM_CACHE)/<name>-<hash>/ and symlinked into
# build/, so a fresh clone on the same machine does not rebuild.

COLLECTOR_MK_DIR := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
CRM_ROOT ?= $(abspath $(COLLECTOR_MK_DIR)/..)
CRM_BUILD ?= $(CRM_ROOT)/build
CRM_CONFIGS ?= $(CRM_ROOT)/collector-config

export OTEL_CRM_CACHE ?= $(HOME)/.cache/otel-crm
export PATH := $(PATH):/usr/local/go/bin

export OTELCOL_BIN ?= $(CRM_BUILD)/otelcol-crm
export JAEGER_BIN ?= $(CRM_BUILD)/jaeger
export TELEMETRYGEN_BIN ?= $(CRM_BUILD)/telemetrygen
export PROMTOOL ?= $(CRM_BUILD)/promtool

BUILD_TOOLS := bash $(CRM_ROOT)/scripts/build-tools.sh

# Env used to validate the shipped configs without touching default ports.
VALIDATE_ENV := OTELCOL_LOGS_FILE=/dev/null LB_BACKENDS='[127.0.0.1:4417,127.0.0.1:4517]'

.PHONY: collector jaeger telemetrygen promtool e2e-prereqs validate-configs alerts-test \
	stack stack-down collector-bench

# Each target is cheap when cached: the script hashes the manifest / pin and
# only (re)links the cached binary.
collector:
	@$(BUILD_TOOLS) collector

jaeger:
	@$(BUILD_TOOLS) jaeger

telemetrygen:
	@$(BUILD_TOOLS) telemetrygen

promtool:
	@$(BUILD_TOOLS) promtool

# Everything tests/e2e and the alert tests need.
e2e-prereqs: collector jaeger telemetrygen promtool

validate-configs: collector jaeger
	@set -e; for f in $(CRM_CONFIGS)/otelcol.yaml $(CRM_CONFIGS)/gateway/*.yaml; do \
	  echo "validate $${f#$(CRM_ROOT)/}"; \
	  env $(VALIDATE_ENV) $(OTELCOL_BIN) validate --config "$$f"; \
	done
	@echo "validate collector-config/jaeger.yaml"; $(JAEGER_BIN) validate --config $(CRM_CONFIGS)/jaeger.yaml

alerts-test: promtool
	$(PROMTOOL) check rules $(CRM_CONFIGS)/prometheus/rules.yaml $(CRM_CONFIGS)/prometheus/alerts.yaml
	cd $(CRM_CONFIGS)/prometheus && $(PROMTOOL) test rules rules.test.yaml alerts.test.yaml
	$(PROMTOOL) check rules $(CRM_CONFIGS)/prometheus/journeys.rules.yaml
	cd $(CRM_CONFIGS)/prometheus && $(PROMTOOL) test rules journeys.test.yaml
	$(PROMTOOL) check config --syntax-only $(CRM_CONFIGS)/prometheus/prometheus.yml

# Collector + Jaeger (+ Prometheus when available) on 127.0.0.1, in the background.
stack: collector jaeger
	@bash $(CRM_ROOT)/scripts/stack.sh up

stack-down:
	@bash $(CRM_ROOT)/scripts/stack.sh down

# Load benchmark (not a test): telemetrygen -> single-node collector.
collector-bench: collector jaeger telemetrygen
	$(or $(wildcard $(CRM_ROOT)/.venv/bin/python),python3) $(CRM_ROOT)/bench/collector_load.py --write-doc $(CRM_ROOT)/docs/collector.md

# The top-level `e2e` target (tests/e2e) needs every binary, promtool included.
e2e: e2e-prereqs
