"""Secrets sent to a real app (the Django example under `opentelemetry-instrument`) in URLs, headers,
bodies that the app logs, span attributes it sets and exceptions it raises: none may reach the
collector's files, nor the JSON lines on stdout. The raw files are searched for each secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.conftest import Collector, django_app, flask_app, instrumented_env, wait_until

pytestmark = pytest.mark.integration

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTQyIiwidGVuYW50IjoiYWNtZSJ9.c2lnbmF0dXJlLXNlY3JldC0xMjM0NQ"
SECRETS = {
    # in the query string (server span url.query, the app's log line, a span event's URL)
    "query_token": "qtok-7f3a9c1e5b2d4f60",
    "query_api_key": "AKIAZ7QX3MPLKW2RT9VB",
    # in headers: Authorization (logged and put on the span by the app), an API key, a cookie and
    # a custom header that no pattern knows — headers are not captured unless configured.
    "bearer": JWT,
    "header_api_key": "sk-proj-Zq8Lm2Nx5Pv7Rt9Wy3Ab6Cd1Ef4Gh",
    "cookie": "sessionid=c00kie-val-unmatched-8841",
    "custom_header": "internal-unmatched-88214",
    # in the JSON body, logged by the app
    "password": "correct-horse-battery-staple-42",
    "card": "4111 1111 1111 1111",
    "email": "jane.doe@example.org",
    "phone": "+1 415 555 2671",
    "refresh_token": "rt-9b8c7d6e5f4a3b2c1d0e",
}


def _probe(url: str) -> requests.Response:
    return requests.post(
        url + f"/privacy-probe?token={SECRETS['query_token']}&api_key={SECRETS['query_api_key']}&page=2",
        json={"email": SECRETS["email"], "password": SECRETS["password"], "card": SECRETS["card"],
              "phone": SECRETS["phone"], "refresh_token": SECRETS["refresh_token"]},
        headers={"Authorization": f"Bearer {SECRETS['bearer']}", "X-Api-Key": SECRETS["header_api_key"],
                 "Cookie": SECRETS["cookie"], "X-Internal-Note": SECRETS["custom_header"],
                 "X-Tenant-ID": "acme"},
        timeout=10)


def _leaks(text: str) -> dict[str, str]:
    found = {}
    for name, secret in SECRETS.items():
        variants = {secret, secret.replace(" ", ""), json.dumps(secret)[1:-1]}
        if name == "email":
            variants.add(secret.replace("@", "%40"))
        for variant in variants:
            if variant in text:
                found[name] = variant
    return found


def test_no_secret_reaches_the_collector_or_stdout(collector: Collector, tmp_path: Path) -> None:
    app = django_app(tmp_path, instrumented_env(collector, "django-crm", OTEL_CRM_SAMPLING_MODE="off",
                                                CRM_TEST_ENDPOINTS="1"))
    response = _probe(app.url(""))
    assert response.status_code == 500  # the endpoint raises on purpose
    assert requests.get(app.url("/health"), timeout=10).status_code == 200
    app.process.stop()

    wait_until(lambda: any(s.name == "POST privacy-probe" for s in collector.spans()), 20, "the probe's span")
    wait_until(lambda: any("password" in str(r.body) for r in collector.logs()), 20, "the probe's log lines")
    # The probe did reach the telemetry (so an empty file cannot pass this test)...
    span = next(s for s in collector.spans() if s.name == "POST privacy-probe")
    assert span.attributes["crm.tenant.id"] == "acme"
    assert any(e["name"] == "exception" for e in span.events)
    assert span.attributes["http.route"] == "privacy-probe"
    assert any("charge failed" in str(r.attributes.get("exception.message", "")) or "charge failed" in str(r.body)
               for r in collector.logs())
    # ...and no secret did, in any file the collector wrote.
    for name in ("traces.jsonl", "logs.jsonl", "metrics.jsonl"):
        path = collector.output / name
        text = path.read_text() if path.exists() else ""
        assert not _leaks(text), f"{name} leaks {_leaks(text)}"
    # Nor in the JSON lines on stdout. (Django's own dev-server lines on stderr, which otel_crm does
    # not format, are excluded: `django.server` writes the raw request line there.)
    json_lines = "\n".join(line for line in app.process.output().splitlines() if line.startswith("{"))
    assert "privacy-probe" in json_lines
    assert not _leaks(json_lines), f"stdout JSON leaks {_leaks(json_lines)}"


def test_flask_example_query_string_secrets_are_scrubbed(collector: Collector, tmp_path: Path) -> None:
    """The Flask example, unchanged: secrets in a URL's query string and in request headers."""
    app = flask_app(tmp_path, instrumented_env(collector, "flask-crm", OTEL_CRM_SAMPLING_MODE="off"))
    url = app.url(f"/leads?token={SECRETS['query_token']}&api_key={SECRETS['query_api_key']}"
                  f"&email={SECRETS['email']}")
    response = requests.get(url, timeout=10, headers={"Authorization": f"Bearer {SECRETS['bearer']}",
                                                      "Cookie": SECRETS["cookie"],
                                                      "X-Internal-Note": SECRETS["custom_header"]})
    assert response.status_code == 200
    requests.get(app.url(f"/fail?password={SECRETS['password']}"), timeout=10)
    app.process.stop()
    wait_until(lambda: any(s.name == "GET /fail" for s in collector.spans()), 20, "the Flask spans")
    leads = next(s for s in collector.spans() if s.name == "GET /leads")
    assert "url.query" in leads.attributes
    for name in ("traces.jsonl", "logs.jsonl", "metrics.jsonl"):
        path = collector.output / name
        text = path.read_text() if path.exists() else ""
        assert not _leaks(text), f"{name} leaks {_leaks(text)}"
    json_lines = "\n".join(line for line in app.process.output().splitlines() if line.startswith("{"))
    assert not _leaks(json_lines), f"stdout JSON leaks {_leaks(json_lines)}"


def test_control_without_scrubbing_the_probe_leaks_but_uncaptured_headers_never_appear(
        collector: Collector, tmp_path: Path) -> None:
    """The negative control: with OTEL_CRM_SCRUB_MODE=off the same probe does put the secrets the
    app handles into telemetry (so the test above is not passing vacuously), while headers the app
    never touches (Cookie, custom ones) are absent even then: no request headers are captured
    unless OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST names them."""
    app = django_app(tmp_path, instrumented_env(collector, "django-crm", OTEL_CRM_SAMPLING_MODE="off",
                                                CRM_TEST_ENDPOINTS="1", OTEL_CRM_SCRUB_MODE="off"))
    assert _probe(app.url("")).status_code == 500
    app.process.stop()
    wait_until(lambda: any("password" in str(r.body) for r in collector.logs()), 20, "the probe's log lines")
    wait_until(lambda: any(s.name == "POST privacy-probe" for s in collector.spans()), 20, "the probe's span")
    text = "".join((collector.output / n).read_text() for n in ("traces.jsonl", "logs.jsonl"))
    leaked = _leaks(text)
    assert {"query_token", "bearer", "header_api_key", "password", "card", "email", "phone",
            "refresh_token"} <= set(leaked)
    assert "cookie" not in leaked and "custom_header" not in leaked
