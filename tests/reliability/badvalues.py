"""Bad values for every variable: each of otel_crm's (the settings REGISTRY) and each standard
OTEL_* variable the SDK declares, one app start per value.

Verdicts: `pass` (the app started, served, kept recording spans, exited cleanly on SIGTERM, printed
no traceback, and one line named the variable where the value is checkable), `FAIL` (any of the
first five broke: the host app noticed), `silent` (survived, but no line says the value was
refused), `noisy` (survived, with more than one line naming it)."""

from __future__ import annotations

import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from otel_crm._internal.settings import REGISTRY, Kind
from tests.reliability.harness import AppRun

__all__ = ["BadValue", "Outcome", "bad_values", "try_value"]


@dataclass(frozen=True)
class BadValue:
    variable: str
    value: str
    source: str  # "otel_crm" (registry) or "standard"
    line_expected: bool  # a checkable value: one line should name the variable


@dataclass
class Outcome:
    case: BadValue
    served: bool
    recording: bool
    exited: bool
    tracebacks: int
    lines: int
    detail: str = ""

    @property
    def ok(self) -> bool:
        """The host app did not notice: started, served, recorded, exited, no traceback."""
        return self.served and self.recording and self.exited and not self.tracebacks

    @property
    def verdict(self) -> str:
        if not self.ok:
            return "FAIL"
        if self.lines > 1:
            return "noisy"
        if self.case.line_expected and not self.lines:
            return "silent"
        return "pass"

    def row(self) -> tuple[str, ...]:
        verdict = {"FAIL": "**FAIL**", "pass": "pass"}.get(self.verdict, self.verdict)
        return (f"`{self.case.variable}`", f"`{self.case.value[:24]!r}`", self.case.source,
                "yes" if self.served else "**no**", "yes" if self.recording else "**no**",
                "yes" if self.exited else "**no**", str(self.tracebacks), str(self.lines), verdict, self.detail)


_BY_KIND = {Kind.BOOL: "maybe", Kind.INT: "abc", Kind.FLOAT: "abc", Kind.ENUM: "bogus",
            Kind.ENUM_LIST: "bogus", Kind.MAPPING: "novalue", Kind.JSON: "{not json",
            Kind.JSON_LIST: "[{not json"}
_STRINGS = {"OTEL_CRM_TENANT_RESOLVER": ("no_such_module:resolve", True),
            "OTEL_CRM_PRICING_FILE": ("/nonexistent/prices.json", True),
            "OTEL_CRM_JOURNEYS_FILE": ("/nonexistent/journeys.json", True),
            "OTEL_CRM_SCRUB_PATTERNS": ("([unclosed", True),
            "OTEL_CRM_SCRUB_ALLOW_PATTERNS": ("([unclosed", True)}
_STANDARD_RULES: tuple[tuple[str, str, bool], ...] = (
    (r"_(LIMIT|SIZE|DELAY|TIMEOUT|INTERVAL)$|_PORT$", "abc", True),
    (r"_INSECURE$|_ENABLED$|_SDK_DISABLED$", "maybe", True),
    (r"_ENDPOINT$", "::not a url::", True),
    (r"_HEADERS$", "novalue", True),
    (r"_(CERTIFICATE|CLIENT_KEY)$|CONFIG_FILE$", "/nonexistent/file.pem", True),
    (r"_SAMPLER_ARG$", "abc", True),
    (r"_RESOURCE_ATTRIBUTES$", "novalue", True),
    (r"_SERVICE_NAME$|_HOST$", "\x7f" * 3, False),
)


def _source(variable: str) -> str:
    # The registry declares the standard variables too (settings_std.py): the prefix tells them apart.
    return "otel_crm" if variable.startswith("OTEL_CRM_") else "standard"


def _standard_variables() -> list[str]:
    import opentelemetry.environment_variables as api_vars
    import opentelemetry.sdk.environment_variables as sdk_vars

    return sorted({value for module in (api_vars, sdk_vars) for name, value in vars(module).items()
                   if name.startswith("OTEL_") and isinstance(value, str)})


def bad_values(quick: bool = False) -> list[BadValue]:
    """One bad value per variable; `quick`: one per kind of setting + the standard variables that
    broke the host app in issue #10."""
    cases: list[BadValue] = []
    ours: set[str] = set()
    kinds_seen: set[Kind] = set()
    for entry in REGISTRY:
        for variable in entry.env:
            if variable in ours:
                continue
            ours.add(variable)
            if variable in _STRINGS:
                value, expected = _STRINGS[variable]
            elif entry.kind in _BY_KIND:
                value, expected = _BY_KIND[entry.kind], True
            elif re.search(r"_ENDPOINT$", variable):
                value, expected = "::not a url::", True
            else:  # a free string or list: nothing is invalid, a hostile value must still pass
                value, expected = "\x7f" * 3 + "x" * 300, False
            if quick and (entry.kind in kinds_seen or (variable.startswith("OTEL_") and
                          not variable.startswith("OTEL_CRM_"))):
                continue
            kinds_seen.add(entry.kind)
            cases.append(BadValue(variable, value, _source(variable), expected))
    quick_standard = {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_PROPAGATORS",
                      "OTEL_TRACES_SAMPLER", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_EXPORTER_OTLP_TIMEOUT"}
    for variable in _standard_variables():
        if quick and variable not in quick_standard:
            continue
        if variable in ours and not quick:
            continue  # already tried as one of ours
        value, expected = "garbage", True
        for pattern, rule_value, rule_expected in _STANDARD_RULES:
            if re.search(pattern, variable):
                value, expected = rule_value, rule_expected
                break
        cases.append(BadValue(variable, value, _source(variable), expected))
    return cases


def try_value(work: Path, case: BadValue, endpoint: str) -> Outcome:
    """Start the app with one bad value, ask it for one unit of work, SIGTERM it."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, case.variable: case.value}
    safe = re.sub(r"\W", "_", case.variable).lower()
    try:
        app = AppRun(work, env, name=f"bad-{safe}")
    except (RuntimeError, TimeoutError) as exc:
        text = str(exc)
        return Outcome(case, False, False, False, text.count("Traceback"), _lines(text, case.variable),
                       detail=_traceback_summary(text) or _last_line(text))
    served = recording = False
    detail = ""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{app.port}/work", timeout=5) as response:
            served = response.status == 200
        recording = bool(app.stats().get("recording"))
    except OSError as exc:
        detail = f"request failed: {exc}"
    app.terminate(timeout=8)
    exited = app.returncode in (0, -15) and (app.exit_seconds or 0) <= 5
    output = app.process.output()
    if not recording and not detail:
        detail = "spans not recording: telemetry off"
    if app.tracebacks():
        detail = detail or _traceback_summary(output) or "traceback"
    return Outcome(case, served, recording, exited, app.tracebacks(), _lines(output, case.variable), detail)


def try_all(work: Path, cases: list[BadValue], endpoint: str, parallel: int = 2) -> list[Outcome]:
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(lambda case: try_value(work, case, endpoint), cases))


def _lines(text: str, variable: str) -> int:
    pattern = re.compile(rf"\b{re.escape(variable)}\b")
    return sum(1 for line in text.splitlines() if pattern.search(line) and not line.startswith("RELIABILITY"))


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("RELIABILITY")]
    return lines[-1][:160] if lines else ""


def _traceback_summary(text: str) -> str:
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Traceback"):
            for after in lines[index + 1:]:
                if after and not after.startswith(" "):
                    return after[:160]
    return ""
