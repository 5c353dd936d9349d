"""Helper misuse: wrong types, NaN, infinities, huge token counts, passed to every public helper.

Run as a script (production mode: not under pytest, so otel_crm swallows instead of re-raising).
For each call it prints one `RELIABILITY-CASE {json}` line: whether an exception reached the
caller, how much `crm.internal.errors` grew (read from otel_crm's own Prometheus endpoint) and
whether a cost was recorded. `run(work)` starts it and parses the lines.
"""

from __future__ import annotations

import json
import math
import os
import sys
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

__all__ = ["clean_env", "main", "run"]

NAN, INF = math.nan, math.inf
BAD_COUNTS: tuple[Any, ...] = (None, "abc", NAN, INF, -1, 10**20, 1.5, object())
BAD_NAMES: tuple[Any, ...] = (None, 123, NAN, object(), b"bytes")


def _cases() -> list[tuple[str, bool, Callable[[], Any]]]:
    """(label, invalid: must be counted, call)."""
    import otel_crm

    def ctx(factory: Callable[[], Any], use: Callable[[Any], Any] = lambda h: None) -> Callable[[], Any]:
        def call() -> Any:
            with factory() as handle:
                use(handle)
        return call

    def decorated(decorator: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:  # decorate, then call: both within the measured call
            return decorator()(int)()
        return call

    cases: list[tuple[str, bool, Callable[[], Any]]] = []
    for bad in BAD_NAMES:
        b = bad
        cases += [
            (f"workflow({b!r})", True, ctx(lambda b=b: otel_crm.workflow(b))),
            (f"step({b!r})", True, ctx(lambda b=b: otel_crm.step(b))),
            (f"connector_operation({b!r}, 'sync')", True, ctx(lambda b=b: otel_crm.connector_operation(b, "sync"))),
            (f"connector_operation('hubspot', {b!r})", True,
             ctx(lambda b=b: otel_crm.connector_operation("hubspot", b))),
            (f"search_query({b!r})", True, ctx(lambda b=b: otel_crm.search_query(b))),
            (f"agent_invocation({b!r}, 'gpt-4o')", True, ctx(lambda b=b: otel_crm.agent_invocation(b, "gpt-4o"))),
            (f"agent_invocation('openai', {b!r})", True, ctx(lambda b=b: otel_crm.agent_invocation("openai", b))),
        ]
    for bad in BAD_COUNTS:
        b = bad
        cases += [
            (f"step('s', index={b!r})", b is not None, ctx(lambda b=b: otel_crm.step("s", index=b))),
            (f"set_records({b!r})", True,
             ctx(lambda: otel_crm.connector_operation("hubspot", "sync"), lambda h, b=b: h.set_records(b))),
            (f"set_results({b!r})", True, ctx(lambda: otel_crm.search_query("leads"), lambda h, b=b: h.set_results(b))),
            (f"record_usage({b!r}, 10)", True,
             ctx(lambda: otel_crm.agent_invocation("openai", "gpt-4o"), lambda h, b=b: h.record_usage(b, 10))),
            (f"record_usage(10, {b!r})", True,
             ctx(lambda: otel_crm.agent_invocation("openai", "gpt-4o"), lambda h, b=b: h.record_usage(10, b))),
        ]
    usage = lambda *a, **k: ctx(lambda: otel_crm.agent_invocation("openai", "gpt-4o"),  # noqa: E731
                                lambda h: h.record_usage(*a, **k))
    aware = datetime.now(timezone.utc) - timedelta(hours=1)
    cases += [
        ("record_usage(None, None)", True, usage(None, None)),
        ("record_usage(10**9 + 1, 0)", True, usage(10**9 + 1, 0)),
        ("record_usage(10, 10, response_model=123)", True, usage(10, 10, response_model=123)),
        ("record_messages(object(), b'x')", False,
         ctx(lambda: otel_crm.agent_invocation("openai", "gpt-4o"), lambda h: h.record_messages(object(), b"x"))),
        ("workflow('w', execution_id=object())", False, ctx(lambda: otel_crm.workflow("w", execution_id=object()))),
        ("workflow('w', trigger=123)", True, ctx(lambda: otel_crm.workflow("w", trigger=123))),
        ("search_query('leads', system=123)", True, ctx(lambda: otel_crm.search_query("leads", system=123))),
        ("connector_operation('h', 's', resource_type=NaN)", True,
         ctx(lambda: otel_crm.connector_operation("h", "s", resource_type=NAN))),
        ("agent_invocation('openai', 'gpt-4o', agent_name=[1])", True,
         ctx(lambda: otel_crm.agent_invocation("openai", "gpt-4o", agent_name=[1]))),
        ("instrument_sync_operation(None)(f)()", True, decorated(lambda: otel_crm.instrument_sync_operation(None))),
        ("instrument_connector_operation(123)(f)()", True,
         decorated(lambda: otel_crm.instrument_connector_operation(123))),
        ("journey_milestone(None, None, ...)", True,
         lambda: otel_crm.journey_milestone(None, None, subject_id="u", started_at=aware)),
        ("journey_milestone('nope', 'x', ...)", True,
         lambda: otel_crm.journey_milestone("nope", "x", subject_id="u", started_at=aware)),
        ("journey_milestone(..., started_at='yesterday')", True,
         lambda: otel_crm.journey_milestone("nope", "x", subject_id="u", started_at="yesterday")),
        ("journey_milestone(..., started_at=naive)", True,
         lambda: otel_crm.journey_milestone("nope", "x", subject_id="u", started_at=datetime.now())),
        ("journey_milestone(..., subject_id=None)", True,
         lambda: otel_crm.journey_milestone("nope", "x", subject_id=None, started_at=aware)),
    ]
    return cases


def _scrape(port: int) -> tuple[float, float]:
    """(crm.internal.errors total, crm.gen_ai.cost total) from the Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    errors = cost = 0.0
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.split("{")[0].split(" ")[0], line.rsplit(" ", 1)[1]
        if name.startswith("crm_internal_errors") and name.endswith("_total"):
            errors += float(value)
        elif name.startswith("crm_gen_ai_cost") and (name.endswith("_total") or name.endswith("_sum")):
            cost += float(value)
    return errors, cost


def main() -> None:
    import otel_crm

    port = int(sys.argv[1])
    otel_crm.configure(prometheus_port=port, traces_exporter=("none",), logs_exporter=("none",),
                       metrics_exporter=("none",), log_format="none", sampling_mode="off")
    for label, invalid, call in _cases():
        before, cost_before = _scrape(port)
        raised = ""
        try:
            call()
        except Exception as exc:
            raised = f"{type(exc).__name__}: {exc}"[:200]
        after, cost_after = _scrape(port)
        print("RELIABILITY-CASE " + json.dumps({"call": label, "invalid": invalid, "raised": raised,
                                                "counted": after - before, "cost": cost_after - cost_before}),
              flush=True)


def clean_env() -> dict[str, str]:
    """This process's environment without OTEL_* and pytest variables: the driver's own settings only."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTEST"))}


def run(work: Path, timeout: float = 120) -> list[dict[str, Any]]:
    import subprocess

    from tests.support.processes import ROOT, free_port

    done = subprocess.run([sys.executable, str(Path(__file__)), str(free_port())], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=clean_env())
    (work / "misuse.log").write_text(done.stdout + done.stderr)
    cases = [json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines()
             if line.startswith("RELIABILITY-CASE ")]
    if done.returncode != 0 or not cases:
        raise RuntimeError(f"misuse driver failed ({done.returncode}): {done.stderr[-2000:]}")
    return cases


if __name__ == "__main__":
    main()
