#!/usr/bin/env bash
# make demo: the stack (collector + Jaeger [+ Prometheus]) and the Flask CRM example under
# opentelemetry-instrument, some traffic, then where to look. The stack stays up: make stack-down.
#
# Every command printed under "Look at it" is run by tests/e2e/test_demo.py, which checks that it
# returns what its label says. Keep the "  label:  command" layout when adding one (and add its check).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
CLI="${CLI:-.venv/bin/otel-crm}"
STACK="${STACK_DIR:-$ROOT/build/stack}"
PORT="${DEMO_PORT:-5050}"
SERVICE="${DEMO_SERVICE:-crm-demo}"
JAEGER="http://${JAEGER_QUERY_HTTP_ENDPOINT:-127.0.0.1:16686}"
OTLP="http://${OTELCOL_OTLP_GRPC_ENDPOINT:-127.0.0.1:4317}"
METRICS="http://${OTELCOL_PROMETHEUS_ENDPOINT:-127.0.0.1:8889}/metrics"
mkdir -p "$STACK"
started=$SECONDS

cat <<MSG
make demo: collector + Jaeger on 127.0.0.1, the Flask example (examples/flask_crm) with traffic.
Jaeger here is built from source with Go: it serves its query API only, and its page at
$JAEGER is a placeholder. Where Docker exists, the real Jaeger UI is one command away:
  make stack-down && docker compose -f collector-config/docker-compose.yaml up
(then point your app at it and open http://127.0.0.1:16686). This demo shows traces in the
terminal instead, with \`otel-crm traces\`.

MSG

# Decide traces 5 s after their first span (the shipped default is 30 s, sized for production).
export OTELCOL_DECISION_WAIT="${OTELCOL_DECISION_WAIT:-5s}"
export OTELCOL_SPANMETRICS_FLUSH_INTERVAL="${OTELCOL_SPANMETRICS_FLUSH_INTERVAL:-2s}"
bash scripts/stack.sh up >&2

# The development profile, as the README suggests for trying things: every trace is kept (tail
# mode, ratio 1.0) and marked with why (crm.sampling.reason), so the collector keeps them all.
OTEL_SERVICE_NAME="$SERVICE" OTEL_EXPORTER_OTLP_ENDPOINT="$OTLP" OTEL_CRM_ENVIRONMENT=development \
OTEL_CRM_JOURNEYS_FILE=examples/journeys/crm_activation.json \
OTEL_METRIC_EXPORT_INTERVAL=2000 OTEL_BSP_SCHEDULE_DELAY=500 CRM_PORT="$PORT" \
  "$ROOT/.venv/bin/opentelemetry-instrument" "$PY" examples/flask_crm/app.py >"$STACK/demo-app.log" 2>&1 &
APP_PID=$!
echo "$APP_PID" >"$STACK/demo-app.pid"
trap 'kill -TERM $APP_PID 2>/dev/null || true' EXIT

sent="$("$PY" - "$PORT" <<'PY'
import sys, time
import requests

base = f"http://127.0.0.1:{sys.argv[1]}"
deadline = time.monotonic() + 60
sent = 0
while True:
    try:
        ok = requests.get(f"{base}/health", timeout=1).ok
        sent += 1
        if ok:
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
    sent += 4
for tenant in tenants:
    requests.post(f"{base}/sync/hubspot", headers={"X-Tenant-ID": tenant, "X-User-ID": str(users[tenant])})
requests.get(f"{base}/leads/search?q=acme", headers={"X-Tenant-ID": "acme"})
for _ in range(3):
    requests.get(f"{base}/fail", headers={"X-Tenant-ID": "globex"})
requests.get(f"{base}/slow?seconds=2.2", headers={"X-Tenant-ID": "initech"})
for _ in range(40):
    requests.get(f"{base}/ok")
sent += len(tenants) + len(tenants) + 1 + 3 + 1 + 40  # signups, syncs, search, fail, slow, ok
print(f"sent {sent} requests (3 tenants, 3 failing, 1 slow, 40 plain ok, 3 activation journeys)", file=sys.stderr)
print(sent)
PY
)"

kill -TERM "$APP_PID" 2>/dev/null || true   # flushes on SIGTERM within its deadline
wait "$APP_PID" 2>/dev/null || true
trap - EXIT

# The collector decides a trace decision_wait after its first span: wait until every request's
# trace is in Jaeger (bounded), then look the interesting ones up.
"$PY" - "$JAEGER" "$SERVICE" "$sent" <<'PY' || echo "(not every trace arrived within 90 s; the lists below show what did)" >&2
import json, sys, time, urllib.request

jaeger, service, sent = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"{jaeger}/api/traces?service={service}&limit=1000", timeout=5) as r:
            if len(json.load(r).get("data") or []) >= sent:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit(1)
PY

trace_of() { # operation name -> the newest trace id of that root operation
  "$PY" - "$JAEGER" "$SERVICE" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request

jaeger, service, operation = sys.argv[1:]
query = urllib.parse.urlencode({"service": service, "operation": operation, "limit": 20})
with urllib.request.urlopen(f"{jaeger}/api/traces?{query}", timeout=5) as r:
    traces = json.load(r).get("data") or []
roots = [(min(s["startTime"] for s in t["spans"]), t["traceID"]) for t in traces
         if any(s["operationName"] == operation and not s.get("references") for s in t["spans"])]
print(max(roots)[1] if roots else "")
PY
}
SLOW_ID="$(trace_of 'GET /slow')"
QUALIFY_ID="$(trace_of 'POST /leads/<int:lead_id>/qualify')"
ERRORS_API="$JAEGER/api/traces?service=$SERVICE&tags=%7B%22http.response.status_code%22%3A%22500%22%7D"

cat <<MSG

Demo traffic is in ($(( SECONDS - started )) s). Look at it, from the repository root:
  Recent traces:  $CLI traces --service $SERVICE --jaeger $JAEGER
  Only errors:  $CLI traces --service $SERVICE --errors --jaeger $JAEGER
  Only slow (2 s or more):  $CLI traces --service $SERVICE --slow --jaeger $JAEGER
  One tenant:  $CLI traces --service $SERVICE --tenant acme --jaeger $JAEGER
  An LLM agent in a workflow:  $CLI traces $QUALIFY_ID --jaeger $JAEGER
  The slow trace:  $CLI traces $SLOW_ID --jaeger $JAEGER
  Jaeger API, raw JSON:  curl -s '$JAEGER/api/traces?service=$SERVICE&limit=20'
  Jaeger API, HTTP 500s:  curl -s '$ERRORS_API'
  RED metrics:  curl -s $METRICS | grep -E '^(crm_requests_total|traces_span_metrics_calls_total)' | head
  Journeys:  curl -s $METRICS | grep -E '^crm_journey_(starts|completions)_total'
  The app's JSON logs:  cat ${STACK#$ROOT/}/demo-app.log
Stop everything with: make stack-down
MSG
if [[ -n "$QUALIFY_ID" ]]; then
  printf '\nAn LLM agent inside a workflow, as `otel-crm traces` draws it (tokens and cost from its GenAI attributes):\n'
  "$ROOT/$CLI" traces "$QUALIFY_ID" --jaeger "$JAEGER"
fi
if [[ -n "$SLOW_ID" ]]; then
  printf '\nThe slow trace:\n'
  "$ROOT/$CLI" traces "$SLOW_ID" --jaeger "$JAEGER"
else
  echo "(the slow trace has not reached Jaeger: see ${STACK#$ROOT/}/otelcol.log)"
fi
