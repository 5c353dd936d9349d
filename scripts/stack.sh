#!/usr/bin/env bash
# Local otel_crm stack on 127.0.0.1: Jaeger v2 + otelcol-crm (+ Prometheus when a
# `prometheus` binary is available: build/prometheus from `make promtool`, or PATH).
#
#   scripts/stack.sh up     # start in the background, wait for health, print URLs
#   scripts/stack.sh down   # stop what `up` started (by pid files)
#   scripts/stack.sh status
#
# pids: build/stack/*.pid, logs: build/stack/*.log. Idempotent: `up` leaves
# running members alone. Ports come from the same env vars as the configs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="${STACK_DIR:-$ROOT/build/stack}"
CFG="$ROOT/collector-config"
OTELCOL_BIN="${OTELCOL_BIN:-$ROOT/build/otelcol-crm}"
JAEGER_BIN="${JAEGER_BIN:-$ROOT/build/jaeger}"
PROMETHEUS_BIN="${PROMETHEUS_BIN:-}"
if [[ -z "$PROMETHEUS_BIN" ]]; then
  if [[ -x "$ROOT/build/prometheus" ]]; then PROMETHEUS_BIN="$ROOT/build/prometheus"
  else PROMETHEUS_BIN="$(command -v prometheus || true)"; fi
fi

export OTELCOL_OTLP_GRPC_ENDPOINT="${OTELCOL_OTLP_GRPC_ENDPOINT:-127.0.0.1:4317}"
export OTELCOL_OTLP_HTTP_ENDPOINT="${OTELCOL_OTLP_HTTP_ENDPOINT:-127.0.0.1:4318}"
export OTELCOL_HEALTH_ENDPOINT="${OTELCOL_HEALTH_ENDPOINT:-127.0.0.1:13133}"
export OTELCOL_PROMETHEUS_ENDPOINT="${OTELCOL_PROMETHEUS_ENDPOINT:-127.0.0.1:8889}"
export OTELCOL_TELEMETRY_HOST="${OTELCOL_TELEMETRY_HOST:-127.0.0.1}"
export OTELCOL_TELEMETRY_PORT="${OTELCOL_TELEMETRY_PORT:-8888}"
export OTELCOL_LOGS_FILE="${OTELCOL_LOGS_FILE:-$STACK/app-logs.jsonl}"
export JAEGER_OTLP_GRPC_ENDPOINT="${JAEGER_OTLP_GRPC_ENDPOINT:-127.0.0.1:4319}"
export JAEGER_OTLP_HTTP_ENDPOINT="${JAEGER_OTLP_HTTP_ENDPOINT:-127.0.0.1:4320}"
export JAEGER_OTLP_ENDPOINT="${JAEGER_OTLP_ENDPOINT:-$JAEGER_OTLP_GRPC_ENDPOINT}"
export JAEGER_QUERY_HTTP_ENDPOINT="${JAEGER_QUERY_HTTP_ENDPOINT:-127.0.0.1:16686}"
export JAEGER_HEALTH_ENDPOINT="${JAEGER_HEALTH_ENDPOINT:-127.0.0.1:13134}"
PROMETHEUS_ENDPOINT="${PROMETHEUS_ENDPOINT:-127.0.0.1:9090}"
HEALTH_TIMEOUT="${STACK_HEALTH_TIMEOUT:-30}"

log() { printf '[stack] %s\n' "$*" >&2; }

running() { # name
  local f="$STACK/$1.pid"
  [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

start() { # name cmd...
  local name="$1"; shift
  if running "$name"; then log "$name already running (pid $(cat "$STACK/$name.pid"))"; return; fi
  "$@" >"$STACK/$name.log" 2>&1 &
  echo $! >"$STACK/$name.pid"
  log "$name started (pid $!, log ${STACK#$ROOT/}/$name.log)"
}

wait_http() { # name url
  local name="$1" url="$2" deadline=$((SECONDS + HEALTH_TIMEOUT))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    if ! running "$name"; then log "$name exited; last log lines:"; tail -n 20 "$STACK/$name.log" >&2; return 1; fi
    if (( SECONDS >= deadline )); then log "$name not healthy at $url after ${HEALTH_TIMEOUT}s"; return 1; fi
    sleep 0.2
  done
  log "$name healthy ($url)"
}

up() {
  mkdir -p "$STACK"
  for b in "$OTELCOL_BIN" "$JAEGER_BIN"; do
    [[ -x "$b" ]] || { log "missing $b: run 'make collector jaeger'"; exit 1; }
  done
  start jaeger "$JAEGER_BIN" --config "$CFG/jaeger.yaml"
  wait_http jaeger "http://$JAEGER_HEALTH_ENDPOINT/status"
  start otelcol "$OTELCOL_BIN" --config "$CFG/otelcol.yaml"
  wait_http otelcol "http://$OTELCOL_HEALTH_ENDPOINT/"
  local prom_url=""
  if [[ -n "$PROMETHEUS_BIN" && -x "$PROMETHEUS_BIN" ]]; then
    # Same scrape jobs as collector-config/prometheus/prometheus.yml, with this stack's ports.
    sed -e "s#127.0.0.1:8889#$OTELCOL_PROMETHEUS_ENDPOINT#" \
        -e "s#127.0.0.1:8888#$OTELCOL_TELEMETRY_HOST:$OTELCOL_TELEMETRY_PORT#" \
        "$CFG/prometheus/prometheus.yml" >"$STACK/prometheus.yml"
    cp "$CFG/prometheus/alerts.yaml" "$CFG/prometheus/rules.yaml" "$CFG/prometheus/journeys.rules.yaml" "$STACK/"
    start prometheus "$PROMETHEUS_BIN" --config.file="$STACK/prometheus.yml" \
      --storage.tsdb.path="$STACK/prometheus-data" --web.listen-address="$PROMETHEUS_ENDPOINT"
    wait_http prometheus "http://$PROMETHEUS_ENDPOINT/-/ready"
    prom_url="http://$PROMETHEUS_ENDPOINT"
  else
    log "no prometheus binary (make promtool extracts one from Debian's package): skipping Prometheus"
  fi
  cat <<MSG

otel_crm stack is up (stop with: make stack-down)
  OTLP gRPC      $OTELCOL_OTLP_GRPC_ENDPOINT   (OTEL_EXPORTER_OTLP_ENDPOINT=http://$OTELCOL_OTLP_GRPC_ENDPOINT)
  OTLP HTTP      http://$OTELCOL_OTLP_HTTP_ENDPOINT
  Jaeger API     http://$JAEGER_QUERY_HTTP_ENDPOINT/api/services
  Metrics        http://$OTELCOL_PROMETHEUS_ENDPOINT/metrics   (collector self-metrics: http://$OTELCOL_TELEMETRY_HOST:$OTELCOL_TELEMETRY_PORT/metrics)
  Prometheus     ${prom_url:-not started}
  Logs           ${STACK#$ROOT/}/*.log
MSG
}

stop_one() { # name
  local f="$STACK/$1.pid"
  [[ -f "$f" ]] || return 0
  local pid; pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    log "$1 stopped (pid $pid)"
  fi
  rm -f "$f"
}

down() {
  for n in prometheus otelcol jaeger; do stop_one "$n"; done
}

status() {
  for n in jaeger otelcol prometheus; do
    if running "$n"; then echo "$n: running (pid $(cat "$STACK/$n.pid"))"; else echo "$n: stopped"; fi
  done
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
