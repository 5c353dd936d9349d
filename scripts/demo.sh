#!/usr/bin/env bash
# make demo: the stack (collector + Jaeger [+ Prometheus]) and the Flask CRM example under
# opentelemetry-instrument, some traffic, then where to look. The stack stays up: make stack-down.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
STACK="$ROOT/build/stack"
PORT="${DEMO_PORT:-5050}"
SERVICE="${DEMO_SERVICE:-crm-demo}"
JAEGER="http://${JAEGER_QUERY_HTTP_ENDPOINT:-127.0.0.1:16686}"
OTLP="http://${OTELCOL_OTLP_GRPC_ENDPOINT:-127.0.0.1:4317}"
mkdir -p "$STACK"

# Decide traces 5 s after their first span (the shipped default is 30 s, sized for production).
export OTELCOL_DECISION_WAIT="${OTELCOL_DECISION_WAIT:-5s}"
bash scripts/stack.sh up

# The stack's collector tail-samples whole traces, so the app exports 100% (collector mode);
# stacking two 10% samplers would keep 1% of ok traces.
OTEL_SERVICE_NAME="$SERVICE" OTEL_EXPORTER_OTLP_ENDPOINT="$OTLP" OTEL_CRM_SAMPLING_MODE=collector \
OTEL_CRM_ENVIRONMENT=demo OTEL_CRM_JOURNEYS_FILE=examples/journeys/crm_activation.json OTEL_METRIC_EXPORT_INTERVAL=2000 OTEL_BSP_SCHEDULE_DELAY=500 CRM_PORT="$PORT" \
  "$ROOT/.venv/bin/opentelemetry-instrument" "$PY" examples/flask_crm/app.py >"$STACK/demo-app.log" 2>&1 &
APP_PID=$!
echo "$APP_PID" >"$STACK/demo-app.pid"
trap 'kill -TERM $APP_PID 2>/dev/null || true' EXIT

"$PY" - "$PORT" <<'PY'
import sys, time
import requests

base = f"http://127.0.0.1:{sys.argv[1]}"
deadline = time.monotonic() + 60
while True:
    try:
        if requests.get(f"{base}/health", timeout=1).ok:
            break
    except requests.RequestException:
        pass
    if time.monotonic() > deadline:
        sys.exit("the demo app did not start: see build/stack/demo-app.log")
    time.sleep(0.2)

tenants = ["acme", "globex", "initech"]
# One account per tenant walks the activation journey (docs/journeys.md); two were imported with
# their original signup time, 20 and 45 minutes ago, so elapsed times straddle the targets.
users = {t: requests.post(f"{base}/signup", json={"email": f"admin@{t}.example", "signed_up_at": (
    None if m == 0 else time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 60 * m)))},
    headers={"X-Tenant-ID": t}).json()["id"] for t, m in zip(tenants, (0, 20, 45))}
for i, tenant in enumerate(tenants * 3):
    headers = {"X-Tenant-ID": tenant, "X-User-ID": str(users[tenant])}
    lead = requests.post(f"{base}/leads", json={"name": f"Lead {i}", "email": f"lead{i}@example.com",
                                                 "company": f"{tenant.title()} Inc"}, headers=headers).json()
    requests.get(f"{base}/leads/{lead['id']}", headers=headers)
    requests.post(f"{base}/leads/{lead['id']}/enrich", headers=headers)
    requests.post(f"{base}/leads/{lead['id']}/qualify", headers=headers)
for tenant in tenants:
    requests.post(f"{base}/sync/hubspot", headers={"X-Tenant-ID": tenant, "X-User-ID": str(users[tenant])})
requests.get(f"{base}/leads/search?q=acme", headers={"X-Tenant-ID": "acme"})
for _ in range(3):
    requests.get(f"{base}/fail", headers={"X-Tenant-ID": "globex"})
requests.get(f"{base}/slow?seconds=2.2", headers={"X-Tenant-ID": "initech"})
for _ in range(40):
    requests.get(f"{base}/ok")
print("sent 90 requests (3 tenants, 3 failing, 1 slow, 40 plain ok, 3 activation journeys)")
PY

kill -TERM "$APP_PID" 2>/dev/null || true   # flushes on SIGTERM within its deadline
wait "$APP_PID" 2>/dev/null || true
trap - EXIT

# The collector decides a trace decision_wait after its first span: wait for the slow one.
for _ in $(seq 1 90); do
  if curl -fsS "$JAEGER/api/traces?service=$SERVICE&operation=GET%20/slow&lookback=1h" 2>/dev/null \
      | grep -q '"traceID"'; then break; fi
  sleep 0.5
done

cat <<MSG

Demo traffic is in. Look at it:
  Traces (Jaeger API):  curl -s '$JAEGER/api/traces?service=$SERVICE&lookback=1h&limit=20' | python3 -m json.tool | less
  Error traces only:    curl -s '$JAEGER/api/traces?service=$SERVICE&lookback=1h&tags=%7B%22error%22%3A%22true%22%7D' | python3 -m json.tool | less
  RED metrics:          curl -s http://${OTELCOL_PROMETHEUS_ENDPOINT:-127.0.0.1:8889}/metrics | grep -E '^crm_requests_total|^traces_span_metrics_calls_total' | head
  Journeys:             curl -s http://${OTELCOL_PROMETHEUS_ENDPOINT:-127.0.0.1:8889}/metrics | grep -E '^crm_journey_(starts|completions)'
  The app's JSON logs:  build/stack/demo-app.log
Stop everything with: make stack-down
MSG
